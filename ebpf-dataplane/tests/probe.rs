//! The build pipeline proven end to end: the shipped object goes through the real verifier, is
//! attached (TCX and clsact) to a veth inside test namespaces, real UDP packets are counted, and
//! a userspace map update changes the verdict.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{net::Ipv4Addr, time::Duration};

use cnikit_ebpf_dataplane::{
    AttachMode, AttachedVia, Direction, Error, ProbeProgram, tcx_supported,
};
use cnikit_test_support::{
    netns::{Role, TestNetns},
    require, require_root,
    traffic::{UdpSink, udp_delivered},
};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const POD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BURST: usize = 10;
const QUIET: Duration = Duration::from_millis(300);

/// A node and a pod namespace joined by `veth0` (node) <-> `eth0` (pod).
fn topology() -> (TestNetns, TestNetns) {
    let node = TestNetns::create(Role::Node).unwrap();
    let pod = TestNetns::create(Role::Pod).unwrap();
    node.veth_to(&pod, "veth0", "eth0").unwrap();
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "veth0"])
        .unwrap();
    pod.ip(&["addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"])
        .unwrap();
    (node, pod)
}

fn counts_and_blocks(mode: AttachMode, expected_via: AttachedVia) {
    let (node, pod) = topology();
    let sink = UdpSink::bind_in(&node, (NODE_IP, 9000).into()).unwrap();
    let send = || udp_delivered(&pod, (POD_IP, 0).into(), &sink, BURST, QUIET).unwrap();

    let mut probe = ProbeProgram::load().unwrap();
    let via = node
        .run(|| probe.attach("veth0", Direction::Ingress, mode))
        .unwrap();
    assert_eq!(via, expected_via);
    let filters = || {
        let out = node
            .command("tc")
            .unwrap()
            .args(["filter", "show", "dev", "veth0", "ingress"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if via == AttachedVia::Clsact {
        assert!(filters().contains("cnikit_probe"), "{}", filters());
    }

    assert_eq!(send(), BURST, "traffic must pass before blocking");
    let before = probe.counters().unwrap();
    assert!(before.packets >= BURST as u64, "{before:?}");
    assert!(before.bytes >= before.packets * 42, "{before:?}");
    assert_eq!(before.dropped, 0);

    probe.block_source(POD_IP).unwrap();
    assert_eq!(send(), 0, "a blocklisted source must be dropped");
    let blocked = probe.counters().unwrap();
    assert_eq!(blocked.dropped, BURST as u64, "{blocked:?}");
    assert!(blocked.packets >= before.packets + BURST as u64);

    assert!(probe.unblock_source(POD_IP).unwrap());
    assert!(
        !probe.unblock_source(POD_IP).unwrap(),
        "second unblock finds nothing"
    );
    assert_eq!(send(), BURST, "traffic must pass again after unblocking");
    assert_eq!(probe.counters().unwrap().dropped, BURST as u64);

    // Detached, the program no longer sees packets, even blocklisted ones.
    probe.block_source(POD_IP).unwrap();
    probe.detach_all().unwrap();
    assert!(!filters().contains("cnikit_probe"), "{}", filters());
    assert_eq!(probe.attachments().count(), 0);
    let detached = probe.counters().unwrap();
    assert_eq!(send(), BURST, "a detached program must not drop");
    assert_eq!(probe.counters().unwrap(), detached);
}

#[test]
fn probe_counts_and_blocks_via_tcx() {
    require_root!("probe_counts_and_blocks_via_tcx");
    require!(
        "probe_counts_and_blocks_via_tcx",
        "TCX (Linux >= 6.6)",
        if tcx_supported() {
            Ok(())
        } else {
            Err("kernel older than 6.6")
        }
    );
    counts_and_blocks(AttachMode::Tcx, AttachedVia::Tcx);
}

#[test]
fn probe_counts_and_blocks_via_clsact() {
    require_root!("probe_counts_and_blocks_via_clsact");
    counts_and_blocks(AttachMode::Clsact, AttachedVia::Clsact);
}

#[test]
fn auto_mode_prefers_tcx_when_available() {
    require_root!("auto_mode_prefers_tcx_when_available");
    let (node, _pod) = topology();
    let mut probe = ProbeProgram::load().unwrap();
    let via = node
        .run(|| probe.attach("veth0", Direction::Egress, AttachMode::Auto))
        .unwrap();
    let expected = if tcx_supported() {
        AttachedVia::Tcx
    } else {
        AttachedVia::Clsact
    };
    assert_eq!(via, expected);
}

#[test]
fn attaching_to_a_missing_interface_is_a_typed_error() {
    require_root!("attaching_to_a_missing_interface_is_a_typed_error");
    let (node, _pod) = topology();
    let mut probe = ProbeProgram::load().unwrap();
    for mode in [AttachMode::Auto, AttachMode::Clsact] {
        let err = node
            .run(|| probe.attach("nosuch0", Direction::Ingress, mode))
            .unwrap_err();
        match &err {
            Error::Attach { interface, .. } => assert_eq!(interface, "nosuch0"),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("nosuch0"), "{err}");
    }
}

#[test]
fn full_blocklist_is_a_typed_error() {
    require_root!("full_blocklist_is_a_typed_error");
    let mut probe = ProbeProgram::load().unwrap();
    let capacity = cnikit_ebpf_common::probe::BLOCKLIST_CAPACITY;
    for i in 0..capacity {
        probe.block_source(Ipv4Addr::from(0xC612_0000 + i)).unwrap();
    }
    let extra = Ipv4Addr::from(0xC612_0000 + capacity);
    match probe.block_source(extra) {
        Err(Error::BlocklistFull { addr, capacity: c }) => {
            assert_eq!(addr, extra);
            assert_eq!(c, capacity);
        }
        other => panic!("expected BlocklistFull, got {other:?}"),
    }
    // Existing entries can still be updated, and freeing one makes room.
    probe.block_source(Ipv4Addr::from(0xC612_0000)).unwrap();
    assert!(probe.unblock_source(Ipv4Addr::from(0xC612_0001)).unwrap());
    probe.block_source(extra).unwrap();
}

#[test]
fn garbage_object_is_a_typed_error_not_a_panic() {
    // Parsing fails before any syscall, so this needs no privileges.
    for bytes in [&b""[..], b"\x7fELF garbage", &[0u8; 64]] {
        match ProbeProgram::load_from(bytes) {
            Err(Error::Object { .. }) => {}
            other => panic!("expected Error::Object, got {other:?}"),
        }
    }
}
