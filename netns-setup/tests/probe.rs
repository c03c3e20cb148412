//! The capability probe against the running kernel, checked against iproute2 as an independent
//! oracle. On this project's CI host (kernel without ipvlan) the probe must say no and IPVLAN
//! must fall back to veth with a reason; inside the VM (`vm_ipvlan`) it must say yes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use cnikit_netns_setup::{
    Mode,
    netlink::RtConnector,
    probe::{Support, choose, probe},
};
use cnikit_test_support::{
    in_ci,
    netns::{Role, TestNetns},
    require_root,
};

fn iproute2_can_create_ipvlan() -> bool {
    let ns = TestNetns::create(Role::Peer).unwrap();
    ns.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        .unwrap();
    ns.ip(&[
        "link", "add", "link", "p0", "name", "p0v", "type", "ipvlan", "mode", "l2",
    ])
    .is_ok()
}

#[tokio::test]
async fn probe_agrees_with_iproute2_and_ipvlan_falls_back_to_veth() {
    require_root!("probe_agrees_with_iproute2_and_ipvlan_falls_back_to_veth");
    let in_vm = std::env::var("CNIKIT_VM").is_ok_and(|v| v == "1");
    let links_before = std::fs::read_dir("/sys/class/net").unwrap().count();
    let caps = probe(&RtConnector).await.unwrap();
    eprintln!("probe: ipvlan {}", caps.ipvlan);
    assert_eq!(caps.ipvlan.is_supported(), iproute2_can_create_ipvlan());
    if in_vm {
        assert_eq!(caps.ipvlan, Support::Supported);
    } else if in_ci() {
        // The CI host's kernel is built without ipvlan.
        assert!(!caps.ipvlan.is_supported(), "{caps:?}");
    }
    let choice = choose(Mode::IpVlan, &caps);
    assert_eq!(choice.requested, Mode::IpVlan);
    match &caps.ipvlan {
        Support::Supported => {
            assert_eq!(choice.chosen, Mode::IpVlan);
            assert_eq!(choice.fallback_reason, None);
        }
        Support::Unsupported(why) => {
            assert_eq!(choice.chosen, Mode::Veth);
            assert_eq!(choice.driver().mode(), Mode::Veth);
            let reason = choice.fallback_reason.unwrap();
            assert!(
                reason.contains("ipvlan") && reason.contains(why.as_str()),
                "{reason}"
            );
        }
    }
    // The probe's scratch namespace left nothing in ours.
    assert_eq!(
        std::fs::read_dir("/sys/class/net").unwrap().count(),
        links_before
    );
}
