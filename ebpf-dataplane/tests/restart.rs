//! Agent restart with maps and links pinned in bpffs: established connections survive the
//! agent's exit and a new agent resumes with the same services, policies, connection tracking
//! and counters, taking the attachments over in place (TCX and clsact).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    io,
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use cnikit_ebpf_dataplane::{
    AttachMode, Capacity, ConntrackEntry, Dataplane, EndpointPolicy, Error, Hook, Packet,
    PacketPath, Peer, PolicyTable, ReferenceModel, Rule, Service, ServiceKey, ServiceTable,
    Statistics, Verdict, hold_tc_hooks, tcp_flags,
};
use cnikit_test_support::{bpffs::TestBpffs, require, require_root};
use common::{CLIENT, CLIENT2, Cluster, Conn, TCP_PORT, VIP, backend_ip};

fn capacity() -> Capacity {
    Capacity {
        services: 32,
        endpoints: 32,
        conntrack: 8_192,
        affinity: 1_024,
        policy_peer_prefixes: 256,
        policy_port_prefixes: 256,
    }
}

/// Which backend a new connection from `client` would get with `backends` (the model shares
/// the kernel's Maglev table and hash).
fn predicted(key: ServiceKey, backends: &[SocketAddrV4], client: SocketAddrV4) -> SocketAddrV4 {
    let mut model = ReferenceModel::default();
    model
        .upsert_service(&Service::new(key, backends.to_vec()))
        .unwrap();
    let syn = Packet::tcp(
        (*client.ip(), client.port()),
        (key.vip, key.port),
        tcp_flags::SYN,
    );
    match model.process(Hook::FromEndpoint, &syn).unwrap() {
        Verdict::Pass(p) => SocketAddrV4::new(p.dst, p.transport.ports().unwrap().1),
        other => panic!("{other:?}"),
    }
}

fn restart(mode: AttachMode) {
    let bpffs = TestBpffs::mount().unwrap();
    let pins = bpffs.path().join("cnikit");
    let cluster = Cluster::new(&[CLIENT, CLIENT2], 4);
    let key = ServiceKey::tcp(VIP, 80);
    let server = |i| SocketAddrV4::new(backend_ip(i), TCP_PORT);
    let first_set = [server(0), server(1)];

    let mut agent = Dataplane::builder()
        .capacity(capacity())
        .pin_dir(&pins)
        .load()
        .unwrap();
    assert!(!agent.restored());
    cluster.attach(&mut agent, mode);
    agent.upsert_service(&Service::new(key, first_set)).unwrap();
    // Only CLIENT may reach backend 0 and 1.
    let only_client = EndpointPolicy::ingress([Rule::new([Peer::host(CLIENT)], [])]);
    for i in 0..2 {
        agent.set_policy(backend_ip(i), &only_client).unwrap();
    }
    agent
        .set_node_addresses(&[cnikit_test_support::pods::GATEWAY])
        .unwrap();
    let client = &cluster.pod(CLIENT).netns;
    let mut conn = Conn::open(client, SocketAddrV4::new(VIP, 80)).unwrap();
    let backend = conn.ask().unwrap();
    let SocketAddr::V4(local) = conn.local() else {
        panic!()
    };
    let stats_before = agent.service_stats(&key).unwrap().unwrap();
    let tracked_before = agent.conntrack().unwrap();

    // The agent exits; the programs stay attached and the connection keeps working.
    drop(agent);
    assert_eq!(conn.ask().unwrap(), backend, "served while no agent runs");

    let mut agent = Dataplane::builder()
        .capacity(capacity())
        .pin_dir(&pins)
        .load()
        .unwrap();
    assert!(agent.restored());
    assert_eq!(agent.service_keys(), vec![key]);
    let mut restored = agent.service(&key).unwrap().backends;
    restored.sort_unstable();
    assert_eq!(restored, first_set.to_vec());
    assert_eq!(
        agent.node_addresses(),
        vec![cnikit_test_support::pods::GATEWAY]
    );
    let mut endpoints = agent.endpoints();
    endpoints.sort_unstable();
    assert_eq!(endpoints, vec![backend_ip(0), backend_ip(1)]);
    // Connection tracking survived with the connection's entries.
    let tracked = agent.conntrack().unwrap();
    assert!(tracked.iter().any(|e| matches!(e,
        ConntrackEntry::Service { client, backend: b, .. } if *client == local && *b.ip() == backend)));
    assert!(
        tracked_before.iter().all(|e| tracked.contains(e)),
        "entries survive"
    );
    // Counters too.
    let stats_after = agent.service_stats(&key).unwrap().unwrap();
    assert_eq!(stats_after.connections, stats_before.connections);
    assert!(
        stats_after.packets > stats_before.packets,
        "counted while no agent ran"
    );

    cluster.attach(&mut agent, mode);
    assert!(
        agent.attachments().all(|(.., replaced)| replaced),
        "every attachment taken over in place"
    );

    // A backend set in which this connection's flow would hash elsewhere: only connection
    // tracking keeps it on its backend.
    let backend = SocketAddrV4::new(backend, TCP_PORT);
    let new_set = (0..4)
        .map(server)
        .filter(|s| *s != backend)
        .map(|other| vec![backend, other])
        .find(|set| predicted(key, set, local) != backend)
        .unwrap_or_else(|| (0..4).map(server).collect());
    agent.replace_backends(&key, &new_set).unwrap();
    assert_eq!(
        conn.ask().unwrap(),
        *backend.ip(),
        "established connection survived"
    );
    conn.close();

    // The policies are still enforced by the restored maps.
    let denied = cluster
        .pod(CLIENT2)
        .netns
        .run(|| TcpStream::connect_timeout(&SocketAddr::V4(server(0)), Duration::from_millis(500)));
    assert_eq!(denied.unwrap_err().kind(), io::ErrorKind::TimedOut);

    // Retire for good: detach, unpin, nothing left.
    agent.detach_all().unwrap();
    drop(agent);
    Dataplane::remove_pins(&pins).unwrap();
    assert!(std::fs::read_dir(&pins).unwrap().next().is_none());
    std::fs::remove_dir(&pins).unwrap();
    let tc = cluster
        .net
        .node()
        .command("tc")
        .unwrap()
        .args([
            "filter",
            "show",
            "dev",
            &cluster.pod(CLIENT).host_if,
            "ingress",
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&tc.stdout).contains("cnikit"));
}

#[test]
fn agent_restart_keeps_connections_via_tcx() {
    require_root!("agent_restart_keeps_connections_via_tcx");
    require!(
        "agent_restart_keeps_connections_via_tcx",
        common::TCX,
        common::tcx()
    );
    restart(AttachMode::Tcx);
}

#[test]
fn agent_restart_keeps_connections_via_clsact() {
    require_root!("agent_restart_keeps_connections_via_clsact");
    restart(AttachMode::Clsact);
}

#[test]
fn pinned_maps_of_another_shape_are_refused() {
    require_root!("pinned_maps_of_another_shape_are_refused");
    let bpffs = TestBpffs::mount().unwrap();
    let pins = bpffs.path().join("cnikit");
    let agent = Dataplane::builder()
        .capacity(capacity())
        .pin_dir(&pins)
        .load()
        .unwrap();
    drop(agent);
    let bigger = Capacity {
        services: 64,
        ..capacity()
    };
    match Dataplane::builder().capacity(bigger).pin_dir(&pins).load() {
        Err(Error::PinnedMapMismatch { path, reason }) => {
            assert!(path.ends_with("CNK_SERVICES"), "{}", path.display());
            assert!(reason.contains("64"), "{reason}");
        }
        other => panic!("expected PinnedMapMismatch, got {other:?}"),
    }
    Dataplane::remove_pins(&pins).unwrap();

    // Pinning outside a bpffs is refused up front.
    let not_bpffs = std::env::temp_dir().join(format!("cnikit-not-bpffs-{}", std::process::id()));
    match Dataplane::builder().pin_dir(&not_bpffs).load() {
        Err(Error::Pin { .. }) => {}
        other => panic!("expected Error::Pin, got {other:?}"),
    }
    std::fs::remove_dir_all(&not_bpffs).unwrap();
}

/// A pod's veth is deleted with the programs on it (a CNI `DEL`); the agent then only lets go
/// of its handles: the link pins of that interface go, every other endpoint keeps working.
fn forget_a_deleted_interface(mode: AttachMode) {
    let bpffs = TestBpffs::mount().unwrap();
    let pins = bpffs.path().join("cnikit");
    let cluster = Cluster::new(&[CLIENT, CLIENT2], 1);
    let mut dp = Dataplane::builder()
        .capacity(capacity())
        .pin_dir(&pins)
        .load()
        .unwrap();
    cluster.attach(&mut dp, mode);
    let key = ServiceKey::tcp(VIP, 80);
    dp.upsert_service(&Service::new(
        key,
        [SocketAddrV4::new(backend_ip(0), TCP_PORT)],
    ))
    .unwrap();
    let link_pins = || std::fs::read_dir(pins.join("links")).map_or(0, Iterator::count);
    let pinned = link_pins();
    let attached = dp.attachments().count();
    let gone = cluster.pod(CLIENT).host_if.clone();

    cluster.net.node().ip(&["link", "del", &gone]).unwrap();
    assert_eq!(dp.forget_interface(&gone).unwrap(), 2, "both programs");
    assert_eq!(dp.attachments().count(), attached - 2);
    assert!(dp.attachments().all(|(interface, ..)| interface != gone));
    let expected_pins = if mode == AttachMode::Tcx {
        pinned - 2
    } else {
        pinned
    };
    assert_eq!(
        link_pins(),
        expected_pins,
        "the deleted interface's link pins"
    );
    assert_eq!(dp.forget_interface(&gone).unwrap(), 0, "idempotent");

    let mut conn = Conn::open(&cluster.pod(CLIENT2).netns, SocketAddrV4::new(VIP, 80)).unwrap();
    assert_eq!(conn.ask().unwrap(), backend_ip(0), "the other endpoint");
    conn.close();
    dp.detach_all().unwrap();
}

#[test]
fn forget_interface_after_deletion_via_tcx() {
    require_root!("forget_interface_after_deletion_via_tcx");
    require!(
        "forget_interface_after_deletion_via_tcx",
        common::TCX,
        common::tcx()
    );
    forget_a_deleted_interface(AttachMode::Tcx);
}

#[test]
fn forget_interface_after_deletion_via_clsact() {
    require_root!("forget_interface_after_deletion_via_clsact");
    forget_a_deleted_interface(AttachMode::Clsact);
}

/// An agent holds the tc hooks on an interface that outlives its pods (the ENI's): the qdisc
/// is there (and stays through a second call), endpoints attached afterwards through clsact
/// work, detaching every endpoint leaves it, and a missing interface is a typed error.
#[test]
fn held_tc_hooks_outlive_the_endpoints() {
    require_root!("held_tc_hooks_outlive_the_endpoints");
    let cluster = Cluster::new(&[CLIENT, CLIENT2], 1);
    let node = cluster.net.node();
    let held = cluster.pod(CLIENT2).host_if.clone();
    let qdiscs = || -> io::Result<String> {
        let out = node
            .command("tc")?
            .args(["qdisc", "show", "dev", &held])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(!qdiscs().unwrap().contains("clsact"), "no clsact yet");
    node.run(|| hold_tc_hooks(&held)).unwrap();
    node.run(|| hold_tc_hooks(&held)).unwrap();
    assert_eq!(
        qdiscs().unwrap().matches("clsact").count(),
        1,
        "one clsact qdisc"
    );
    match node.run(|| hold_tc_hooks("cnk-no-such")) {
        Err(Error::Qdisc { interface, .. }) => assert_eq!(interface, "cnk-no-such"),
        other => panic!("expected Error::Qdisc, got {other:?}"),
    }

    let mut dp = Dataplane::builder().capacity(capacity()).load().unwrap();
    cluster.attach(&mut dp, AttachMode::Clsact);
    let key = ServiceKey::tcp(VIP, 80);
    dp.upsert_service(&Service::new(
        key,
        [SocketAddrV4::new(backend_ip(0), TCP_PORT)],
    ))
    .unwrap();
    for client in [CLIENT, CLIENT2] {
        let mut conn = Conn::open(&cluster.pod(client).netns, SocketAddrV4::new(VIP, 80)).unwrap();
        assert_eq!(
            conn.ask().unwrap(),
            backend_ip(0),
            "translated for {client}"
        );
        conn.close();
    }
    dp.detach_all().unwrap();
    assert!(qdiscs().unwrap().contains("clsact"), "the held qdisc stays");
}
