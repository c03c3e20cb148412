//! Runs inside the qemu VM (`cargo xtask vmtest`): proves the VM provides what the VM tests rely
//! on — root, the harness's namespaces, iproute2, and the kernel modules the host lacks.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use cnikit_test_support::netns::{Role, TestNetns};

#[test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
fn vm_provides_namespaces_dummy_and_ipvlan() {
    assert_eq!(
        std::env::var("CNIKIT_VM").as_deref(),
        Ok("1"),
        "run through `cargo xtask vmtest`"
    );
    let node = TestNetns::create(Role::Node).unwrap();
    let pod = TestNetns::create(Role::Pod).unwrap();
    node.ip(&["link", "add", "eni0", "type", "dummy"]).unwrap();
    node.ip(&["link", "set", "eni0", "up"]).unwrap();
    node.ip(&[
        "link", "add", "link", "eni0", "name", "ipvl0", "type", "ipvlan", "mode", "l2",
    ])
    .unwrap();
    node.ip(&["link", "set", "ipvl0", "netns", pod.name()])
        .unwrap();
    let links = pod.ip(&["-d", "link", "show", "ipvl0"]).unwrap();
    assert!(links.contains("ipvlan"), "{links}");
    node.veth_to(&pod, "veth0", "eth1").unwrap();
    // A device carries either ipvlan or macvlan slaves: use a second parent.
    node.ip(&["link", "add", "eni1", "type", "dummy"]).unwrap();
    node.ip(&[
        "link", "add", "link", "eni1", "name", "mv0", "type", "macvlan",
    ])
    .unwrap();
}
