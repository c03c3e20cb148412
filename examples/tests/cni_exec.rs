//! The CNI protocol end to end through the exec interface: the real `cnikit` binary against the
//! real `cnikit-agent` (embedded simulator), in throwaway node, VPC and pod namespaces.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use cnikit_examples::harness::{Binaries, Echo, TestNode, ask};
use cnikit_test_support::{
    netns::{Role, TestNetns},
    require_root,
};
use serde_json::json;

fn bins() -> Binaries {
    Binaries {
        plugin: env!("CARGO_BIN_EXE_cnikit").into(),
        agent: env!("CARGO_BIN_EXE_cnikit-agent").into(),
    }
}

fn node() -> TestNode {
    let mut node = TestNode::new(bins()).unwrap();
    node.start_agent().unwrap();
    node
}

const GATEWAY: &str = "198.18.0.253";

/// A round trip from `from` to an echo server at `to:7` in `ns`.
fn reaches(from: &TestNetns, ns: &TestNetns, to: std::net::Ipv4Addr) -> bool {
    let addr = (to, 7).into();
    let _echo = Echo::start(ns, addr, "pong").unwrap();
    ask(from, addr, Duration::from_secs(2)).unwrap().is_some()
}

#[test]
fn add_check_del_in_every_version() {
    require_root!("add_check_del_in_every_version");
    let node = node();
    for (i, version) in ["0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let conf = node.netconf(version);
        let pod = TestNetns::create(Role::Pod).unwrap();
        let id = format!("c-{i}");
        let add = node
            .add(&conf, &id, &pod, "prod", &format!("web-{i}"))
            .unwrap();
        assert!(add.success, "{version} ADD: {} {}", add.stdout, add.stderr);
        assert_eq!(add.output["cniVersion"], json!(version));
        let ip = add.ip().unwrap();
        assert!(ip.octets()[0] == 198 && ip.octets()[1] == 18, "{ip}");
        // The VPC's gateway answers the pod through its ENI.
        assert!(
            reaches(&pod, &node.vpc, GATEWAY.parse().unwrap()),
            "pod -> VPC"
        );

        let mut with_prev = conf.clone();
        with_prev["prevResult"] = add.output.clone();
        let check = node
            .cni("CHECK", &with_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(check.success, "{version} CHECK: {}", check.stdout);
        let del = node
            .cni("DEL", &with_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(del.success, "{version} DEL: {}", del.stdout);
        assert_eq!(del.stdout.trim(), "");
        // Idempotent.
        let again = node
            .cni("DEL", &with_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(again.success, "{version} second DEL: {}", again.stdout);
        let check = node
            .cni("CHECK", &with_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(!check.success);
        assert_eq!(check.code(), Some(3), "{}", check.stdout);
    }
}
