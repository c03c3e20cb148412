//! The veth + policy routing driver, wired for real in test namespaces.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::net::IpAddr;

use cnikit_netns_setup::{Node, PodDriver, VethDriver, naming};
use cnikit_test_support::require_root;
use common::{
    Cluster, DNS4, GW4, GW6, NODE4, NODE6, SERVICE4, SERVICE6, assert_two_way, pod4, pod6,
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
