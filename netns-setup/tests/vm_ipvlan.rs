//! The IPVLAN driver, for real, inside the qemu VM booting Debian's kernel (`cargo xtask
//! vmtest`): the host kernel has no ipvlan. Also proves the other half of the fallback decision:
//! in the VM the probe says yes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{net::IpAddr, sync::Arc};

use cnikit_netns_setup::{
    Drift, Error, IpVlanDriver, Mode, Node, PodDriver, PodNetwork, Side, SpecError, naming,
    netlink::{
        Connector, RtConnector,
        fault::{FaultInjector, FaultPlan, FaultyConnector},
    },
    probe::{Support, choose, probe},
};
use cnikit_test_support::{netns::TestNetns, require_root, state::NetState};
use common::{
    Cluster, DNS4, GW4, GW6, NODE4, NODE6, SERVICE4, SERVICE6, assert_two_way, pod4, pod6,
    report_time, settle, stable_state,
};

const VM: &str = "runs in the qemu VM: cargo xtask vmtest";

fn eni_index(cluster: &Cluster) -> u32 {
    let eth1 = cluster.node.ip(&["-o", "link", "show", "eth1"]).unwrap();
    eth1.split(':').next().unwrap().trim().parse().unwrap()
}

fn faulty(netns: &cnikit_netns_setup::Netns, plan: &Arc<FaultPlan>) -> Node {
    Node::new(
        FaultInjector::wrap(RtConnector.connect(netns).unwrap(), Arc::clone(plan)),
        Arc::new(FaultyConnector::new(
            Arc::new(RtConnector),
            Arc::clone(plan),
        )),
    )
}

#[tokio::test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
async fn vm_probe_says_ipvlan_is_supported() {
    require_root!("vm_probe_says_ipvlan_is_supported");
    assert_eq!(std::env::var("CNIKIT_VM").as_deref(), Ok("1"), "{VM}");
    let caps = probe(&RtConnector).await.unwrap();
    assert_eq!(caps.ipvlan, Support::Supported);
    let choice = choose(Mode::IpVlan, &caps);
    assert_eq!(
        (choice.chosen, choice.fallback_reason),
        (Mode::IpVlan, None)
    );
}

#[tokio::test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
async fn ipvlan_pods_reach_each_other_the_vpc_and_the_node() {
    require_root!("ipvlan_pods_reach_each_other_the_vpc_and_the_node");
    let cluster = Cluster::direct();
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let (a, b) = (cluster.pod(), cluster.pod());
    let spec_a = cluster.spec(&a, "ipvl-a", "eth1", 1);
    let spec_b = cluster.spec(&b, "ipvl-b", "eth1", 2);
    let wired = IpVlanDriver.setup(&node, &spec_a).await.unwrap();
    let eni_mac = Cluster::mac(&cluster.node, "eth1");
    assert_eq!(wired.mac, Some(eni_mac), "ipvlan shares the ENI's MAC");
    IpVlanDriver.setup(&node, &spec_b).await.unwrap();

    // The documented wiring, read back with iproute2.
    let host = naming::ipvlan_host_name(eni_index(&cluster));
    let host_link = cluster.node.ip(&["-d", "link", "show", &host]).unwrap();
    assert!(
        host_link.contains("NOARP") && host_link.contains("ipvlan  mode l2"),
        "{host_link}"
    );
    let host_addrs = cluster.node.ip(&["addr", "show", &host]).unwrap();
    assert!(
        host_addrs.contains(&format!("inet {NODE4}/32 scope host")),
        "{host_addrs}"
    );
    let node_routes = cluster.node.ip(&["route", "show"]).unwrap();
    assert!(
        node_routes.contains(&format!("{} dev {host} proto static scope link", pod4(1))),
        "{node_routes}"
    );
    let pod_routes = a.ip(&["route", "show"]).unwrap();
    for expected in [
        format!("default via {GW4} dev eth0 proto static onlink"),
        format!("{NODE4} dev eth0 proto static scope link"),
        format!("198.19.0.0/20 via {NODE4} dev eth0 proto static onlink"),
        format!("{DNS4} via {NODE4} dev eth0 proto static onlink"),
    ] {
        assert!(
            pod_routes.contains(&expected),
            "{expected:?} not in {pod_routes}"
        );
    }
    let pod_neigh = a.ip(&["neigh", "show"]).unwrap();
    assert!(
        pod_neigh.contains(&format!("{NODE4} dev eth0 lladdr {eni_mac} PERMANENT")),
        "{pod_neigh}"
    );

    let (v4a, v4b) = (IpAddr::V4(pod4(1)), IpAddr::V4(pod4(2)));
    let (v6a, v6b) = (IpAddr::V6(pod6(1)), IpAddr::V6(pod6(2)));
    assert_two_way("pod to pod on one ENI", (&a, v4a), (&b, v4b));
    assert_two_way("pod to pod on one ENI (IPv6)", (&a, v6a), (&b, v6b));
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

    IpVlanDriver.teardown(&node, &spec_a).await.unwrap();
    IpVlanDriver.teardown(&node, &spec_b).await.unwrap();
    assert_eq!(a.ip(&["-o", "link"]).unwrap().lines().count(), 1);
    IpVlanDriver.release_eni(&node, &spec_a).await.unwrap();
    assert!(cluster.node.ip(&["link", "show", &host]).is_err());
}

#[tokio::test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
async fn ipvlan_setup_converges_and_check_reports_each_drift() {
    require_root!("ipvlan_setup_converges_and_check_reports_each_drift");
    let cluster = Cluster::direct();
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "ipvl-drift", "eth1", 1);
    IpVlanDriver.setup(&node, &spec).await.unwrap();
    settle(&pod);
    settle(&cluster.node);
    let pod_state = NetState::capture(&pod).unwrap();
    let again = IpVlanDriver.setup(&node, &spec).await.unwrap();
    assert!(again.report.is_noop(), "{:?}", again.report);
    assert_eq!(NetState::capture(&pod).unwrap(), pod_state);
    assert_eq!(IpVlanDriver.check(&node, &spec).await.unwrap(), vec![]);

    let host = naming::ipvlan_host_name(eni_index(&cluster));
    let p4 = pod4(1).to_string();
    let node4 = NODE4.to_string();
    type Case<'a> = (
        &'a str,
        Vec<(&'a TestNetns, Vec<&'a str>)>,
        fn(&Drift) -> bool,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "pod MTU",
            vec![(&pod, vec!["link", "set", "eth0", "mtu", "1300"])],
            |d| {
                matches!(
                    d,
                    Drift::WrongMtu {
                        side: Side::Pod,
                        ..
                    }
                )
            },
        ),
        (
            "pod down",
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
            "pod address",
            vec![(&pod, vec!["addr", "del", "198.18.0.21/24", "dev", "eth0"])],
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
            "Service route",
            vec![(&pod, vec!["route", "del", "198.19.0.0/20"])],
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
            "node neighbour",
            vec![(&pod, vec!["neigh", "del", &node4, "dev", "eth0"])],
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
            "host interface down",
            vec![(&cluster.node, vec!["link", "set", &host, "down"])],
            |d| {
                matches!(
                    d,
                    Drift::LinkDown {
                        side: Side::Node,
                        ..
                    }
                )
            },
        ),
        (
            "host interface",
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
        let drifts = IpVlanDriver.check(&node, &spec).await.unwrap();
        assert!(
            drifts.iter().any(expected),
            "{what}: not detected in {drifts:#?}"
        );
        let repaired = IpVlanDriver.setup(&node, &spec).await.unwrap();
        assert!(!repaired.report.is_noop(), "{what}: nothing repaired");
        assert_eq!(
            IpVlanDriver.check(&node, &spec).await.unwrap(),
            vec![],
            "{what}"
        );
    }
}

#[tokio::test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
async fn ipvlan_failure_at_every_step_leaves_nothing_behind() {
    require_root!("ipvlan_failure_at_every_step_leaves_nothing_behind");
    let cluster = Cluster::direct();
    let netns = cluster.node_netns();
    let plain = Node::connect(&netns).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "ipvl-inject", "eth1", 1);
    IpVlanDriver.ensure_eni(&plain, &spec).await.unwrap();
    let node_before = stable_state(&cluster.node);
    let pod_before = NetState::capture(&pod).unwrap();
    let counter = FaultPlan::count_only();
    IpVlanDriver
        .setup(&faulty(&netns, &counter), &spec)
        .await
        .unwrap();
    let steps = counter.changes();
    assert!(steps >= 10, "{:#?}", counter.log());
    IpVlanDriver.teardown(&plain, &spec).await.unwrap();
    for n in 0..steps {
        let plan = FaultPlan::fail_nth_change(n, libc::EIO);
        let err = IpVlanDriver
            .setup(&faulty(&netns, &plan), &spec)
            .await
            .unwrap_err();
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
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
async fn ipvlan_rejects_bad_input_and_survives_a_vanished_namespace() {
    require_root!("ipvlan_rejects_bad_input_and_survives_a_vanished_namespace");
    let cluster = Cluster::direct();
    let netns = cluster.node_netns();
    let node = Node::connect(&netns).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "ipvl-bad", "eth1", 1);
    type Case = (PodNetwork, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (spec.clone().with_mtu(9000), |e| {
            matches!(e, Error::InvalidSpec(SpecError::MtuAboveEni { .. }))
        }),
        (
            PodNetwork {
                node_ips: vec![IpAddr::V6(NODE6)],
                ..spec.clone()
            },
            |e| matches!(e, Error::InvalidSpec(SpecError::MissingNodeIp { .. })),
        ),
    ];
    let before = stable_state(&cluster.node);
    for (i, (bad, expected)) in cases.into_iter().enumerate() {
        let plan = FaultPlan::count_only();
        let err = IpVlanDriver
            .setup(&faulty(&netns, &plan), &bad)
            .await
            .unwrap_err();
        assert!(expected(&err), "case {i}: {err:?}");
        assert_eq!(plan.changes(), 0, "case {i}: {:?}", plan.log());
    }
    assert_eq!(NetState::capture(&cluster.node).unwrap(), before);

    IpVlanDriver.ensure_eni(&node, &spec).await.unwrap();
    let baseline = stable_state(&cluster.node);
    IpVlanDriver.setup(&node, &spec).await.unwrap();
    let gone = PodNetwork {
        netns: None,
        ..spec.clone()
    };
    drop(spec);
    drop(pod);
    IpVlanDriver.teardown(&node, &gone).await.unwrap();
    IpVlanDriver.teardown(&node, &gone).await.unwrap();
    let after = NetState::capture(&cluster.node).unwrap();
    assert_eq!(after, baseline, "{:#?}", after.diff(&baseline));
}

/// 500 setup/teardown cycles (on the newest kernel) leave the node namespace exactly as it was.
#[tokio::test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
async fn ipvlan_leaves_nothing_after_500_cycles() {
    require_root!("ipvlan_leaves_nothing_after_500_cycles");
    let cluster = Cluster::direct();
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let pods = [cluster.pod(), cluster.pod()];
    let specs: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            cluster.spec(
                p,
                &format!("ipvl-leak-{i}"),
                "eth1",
                u8::try_from(i).unwrap() + 1,
            )
        })
        .collect();
    IpVlanDriver.ensure_eni(&node, &specs[0]).await.unwrap();
    let node_before = stable_state(&cluster.node);
    let pods_before: Vec<_> = pods.iter().map(|p| NetState::capture(p).unwrap()).collect();
    // Under software emulation a cycle takes about 0.3 s: the full 500 run on the newest kernel,
    // 100 on 6.1, so that the VM stage stays within its time limit.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let cycles = if release.starts_with("6.1.") {
        100
    } else {
        500
    };
    let started = std::time::Instant::now();
    for cycle in 0..cycles {
        let spec = &specs[cycle % specs.len()];
        let wired = IpVlanDriver.setup(&node, spec).await.unwrap();
        assert!(wired.report.created > 0, "cycle {cycle}");
        IpVlanDriver.teardown(&node, spec).await.unwrap();
    }
    report_time!(
        "{cycles} IPVLAN cycles on {} in {:?}",
        release.trim(),
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
