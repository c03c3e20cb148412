//! The exclusive-ENI driver, wired for real: the ENI stand-in (a veth whose other end is on the
//! VPC bridge) moves into the pod and back.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{net::IpAddr, sync::Arc};

use cnikit_netns_setup::{
    Drift, Error, ExclusiveEniDriver, Node, PodDriver, PodNetwork, Side, naming,
    netlink::{
        Connector, RtConnector,
        fault::{FaultInjector, FaultPlan, FaultyConnector},
    },
};
use cnikit_test_support::{netns::TestNetns, require_root, state::NetState};
use common::{
    Cluster, DNS4, GW4, GW6, NODE4, NODE6, SERVICE4, SERVICE6, assert_two_way, pod4, pod6,
    report_time, stable_state,
};

fn driver() -> ExclusiveEniDriver {
    ExclusiveEniDriver::default()
}

#[tokio::test]
async fn exclusive_pods_reach_the_vpc_each_other_and_the_node() {
    require_root!("exclusive_pods_reach_the_vpc_each_other_and_the_node");
    let cluster = Cluster::new(2);
    cluster
        .node
        .ip(&["link", "set", "eth2", "mtu", "9000"])
        .unwrap();
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let before = stable_state(&cluster.node);
    let (a, b) = (cluster.pod(), cluster.pod());
    let spec_a = cluster.spec(&a, "excl-a", "eth1", 1).with_mtu(1400);
    let spec_b = cluster.spec(&b, "excl-b", "eth2", 2);
    let eni_mac = Cluster::mac(&cluster.node, "eth1");
    let wired = driver().setup(&node, &spec_a).await.unwrap();
    assert_eq!(wired.mac, Some(eni_mac), "the pod's eth0 is the ENI itself");
    driver().setup(&node, &spec_b).await.unwrap();

    // The ENI is in the pod, renamed, with the pod's MTU; the node no longer has it.
    let eth0 = a.ip(&["-o", "link", "show", "eth0"]).unwrap();
    assert!(
        eth0.contains("mtu 1400") && eth0.contains(&eni_mac.to_string()),
        "{eth0}"
    );
    assert!(cluster.node.ip(&["link", "show", "eth1"]).is_err());
    assert!(
        b.ip(&["-o", "link", "show", "eth0"])
            .unwrap()
            .contains("mtu 9000")
    );
    let routes = a.ip(&["route", "show"]).unwrap();
    assert!(
        routes.contains(&format!("default via {GW4} dev eth0 proto static onlink")),
        "{routes}"
    );
    assert!(
        routes.contains("198.19.0.0/20 via 169.254.1.1 dev veth1 proto static onlink"),
        "{routes}"
    );
    assert!(
        routes.contains(&format!(
            "{NODE4} via 169.254.1.1 dev veth1 proto static onlink"
        )),
        "{routes}"
    );

    let (v4a, v4b) = (IpAddr::V4(pod4(1)), IpAddr::V4(pod4(2)));
    let (v6a, v6b) = (IpAddr::V6(pod6(1)), IpAddr::V6(pod6(2)));
    assert_two_way(
        "pod to VPC gateway",
        (&a, v4a),
        (&cluster.vpc, IpAddr::V4(GW4)),
    );
    assert_two_way(
        "pod to VPC gateway (IPv6)",
        (&a, v6a),
        (&cluster.vpc, IpAddr::V6(GW6)),
    );
    assert_two_way("pod to pod through the VPC", (&a, v4a), (&b, v4b));
    assert_two_way("pod to pod through the VPC (IPv6)", (&a, v6a), (&b, v6b));
    assert_two_way("node to pod", (&cluster.node, IpAddr::V4(NODE4)), (&a, v4a));
    assert_two_way(
        "node to pod (IPv6)",
        (&cluster.node, IpAddr::V6(NODE6)),
        (&b, v6b),
    );
    assert_two_way(
        "pod to Service",
        (&a, v4a),
        (&cluster.node, IpAddr::V4(SERVICE4)),
    );
    assert_two_way(
        "pod to Service (IPv6)",
        (&b, v6b),
        (&cluster.node, IpAddr::V6(SERVICE6)),
    );
    assert_two_way(
        "pod to node-local DNS",
        (&b, v4b),
        (&cluster.node, IpAddr::V4(DNS4)),
    );

    driver().teardown(&node, &spec_a).await.unwrap();
    driver().teardown(&node, &spec_b).await.unwrap();
    // Both ENIs are back: same name, index, MTU, state; no alias; nothing else left.
    let after = NetState::capture(&cluster.node).unwrap();
    assert_eq!(after, before, "{:#?}", after.diff(&before));
    assert_eq!(a.ip(&["-o", "link"]).unwrap().lines().count(), 1);
}

#[tokio::test]
async fn exclusive_setup_converges_and_check_reports_each_drift() {
    require_root!("exclusive_setup_converges_and_check_reports_each_drift");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "excl-drift", "eth1", 1);
    driver().setup(&node, &spec).await.unwrap();
    let again = driver().setup(&node, &spec).await.unwrap();
    assert!(again.report.is_noop(), "{:?}", again.report);
    assert_eq!(driver().check(&node, &spec).await.unwrap(), vec![]);

    let host = naming::host_veth_name("excl-drift", "eth0");
    type Case<'a> = (
        &'a str,
        Vec<(&'a TestNetns, Vec<&'a str>)>,
        fn(&Drift) -> bool,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "ENI MTU",
            vec![(&pod, vec!["link", "set", "eth0", "mtu", "1300"])],
            |d| {
                matches!(
                    d,
                    Drift::WrongMtu {
                        side: Side::Pod,
                        actual: 1300,
                        ..
                    }
                )
            },
        ),
        (
            "ENI down",
            vec![(&pod, vec!["link", "set", "eth0", "down"])],
            |d| matches!(d, Drift::LinkDown { side: Side::Pod, name } if name == "eth0"),
        ),
        (
            "pod address",
            vec![(&pod, vec!["addr", "del", "198.18.0.21/32", "dev", "eth0"])],
            |d| matches!(d, Drift::MissingAddress { side: Side::Pod, link, .. } if link == "eth0"),
        ),
        (
            "Service route",
            vec![(&pod, vec!["route", "del", "198.19.0.0/20"])],
            |d| matches!(d, Drift::MissingRoute { side: Side::Pod, link, .. } if link == "veth1"),
        ),
        (
            "node-path neighbour",
            vec![(&pod, vec!["neigh", "del", "169.254.1.1", "dev", "veth1"])],
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
            "node path",
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
        let drifts = driver().check(&node, &spec).await.unwrap();
        assert!(
            drifts.iter().any(expected),
            "{what}: not detected in {drifts:#?}"
        );
        let repaired = driver().setup(&node, &spec).await.unwrap();
        assert!(!repaired.report.is_noop(), "{what}: nothing repaired");
        assert_eq!(
            driver().check(&node, &spec).await.unwrap(),
            vec![],
            "{what}"
        );
    }
    driver().teardown(&node, &spec).await.unwrap();
}

#[tokio::test]
async fn exclusive_failure_at_every_step_leaves_nothing_behind() {
    require_root!("exclusive_failure_at_every_step_leaves_nothing_behind");
    let cluster = Cluster::new(1);
    let netns = cluster.node_netns();
    let plain = Node::connect(&netns).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "excl-inject", "eth1", 1).with_mtu(1400);
    let node_before = stable_state(&cluster.node);
    let pod_before = NetState::capture(&pod).unwrap();
    let faulty = |plan: &Arc<FaultPlan>| {
        Node::new(
            FaultInjector::wrap(RtConnector.connect(&netns).unwrap(), Arc::clone(plan)),
            Arc::new(FaultyConnector::new(
                Arc::new(RtConnector),
                Arc::clone(plan),
            )),
        )
    };
    let counter = FaultPlan::count_only();
    driver().setup(&faulty(&counter), &spec).await.unwrap();
    let steps = counter.changes();
    assert!(steps >= 10, "{:#?}", counter.log());
    driver().teardown(&plain, &spec).await.unwrap();
    for n in 0..steps {
        let plan = FaultPlan::fail_nth_change(n, libc::EIO);
        let err = driver().setup(&faulty(&plan), &spec).await.unwrap_err();
        assert!(
            plan.fired() && err.to_string().contains("injected"),
            "step {n}: {err}"
        );
        let node_after = NetState::capture(&cluster.node).unwrap();
        assert_eq!(
            node_after,
            node_before,
            "step {n}: {:#?}",
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

#[tokio::test]
async fn exclusive_rejects_an_eni_that_is_not_on_the_node() {
    require_root!("exclusive_rejects_an_eni_that_is_not_on_the_node");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let (a, b) = (cluster.pod(), cluster.pod());
    driver()
        .setup(&node, &cluster.spec(&a, "owner", "eth1", 1))
        .await
        .unwrap();
    // eth1 now belongs to pod a: another pod cannot have it.
    let b_before = NetState::capture(&b).unwrap();
    let err = driver()
        .setup(&node, &cluster.spec(&b, "thief", "eth1", 2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EniNotFound { .. }), "{err:?}");
    assert_eq!(NetState::capture(&b).unwrap(), b_before);
}

#[tokio::test]
async fn exclusive_teardown_after_the_namespace_is_gone() {
    require_root!("exclusive_teardown_after_the_namespace_is_gone");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "excl-gone", "eth1", 1);
    driver().setup(&node, &spec).await.unwrap();
    let gone = PodNetwork {
        netns: None,
        ..spec.clone()
    };
    drop(spec);
    drop(pod);
    // The stand-in ENI is virtual: it dies with the namespace (a physical one would come back
    // to the node; the fake-kernel tests cover that). Nothing of the pod may stay either way.
    driver().teardown(&node, &gone).await.unwrap();
    driver().teardown(&node, &gone).await.unwrap();
    let host = naming::host_veth_name("excl-gone", "eth0");
    for _ in 0..50 {
        if cluster.node.ip(&["link", "show", &host]).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(cluster.node.ip(&["link", "show", &host]).is_err());
    let routes = cluster.node.ip(&["route", "show"]).unwrap();
    assert!(!routes.contains(&pod4(1).to_string()), "{routes}");
}

/// 500 cycles: the ENI goes into a pod and back each time and ends exactly as it started.
#[tokio::test]
async fn exclusive_leaves_nothing_after_500_cycles() {
    require_root!("exclusive_leaves_nothing_after_500_cycles");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let pods = [cluster.pod(), cluster.pod()];
    let specs: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            cluster
                .spec(p, &format!("excl-leak-{i}"), "eth1", 1)
                .with_mtu(1400)
        })
        .collect();
    let node_before = stable_state(&cluster.node);
    let pods_before: Vec<_> = pods.iter().map(|p| NetState::capture(p).unwrap()).collect();
    let started = std::time::Instant::now();
    for cycle in 0..500 {
        let spec = &specs[cycle % specs.len()];
        let wired = driver().setup(&node, spec).await.unwrap();
        assert!(wired.report.created > 0, "cycle {cycle}");
        driver().teardown(&node, spec).await.unwrap();
    }
    report_time!("500 exclusive-ENI cycles in {:?}", started.elapsed());
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
