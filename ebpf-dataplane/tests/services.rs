//! ClusterIP load balancing with real packets: a client pod reaches backend pods through a VIP
//! over TCP and UDP, sees only the VIP, spreads over backends, keeps each connection on its
//! backend through backend changes, and is refused promptly when there are no backends.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use cnikit_ebpf_dataplane::{
    AttachMode, Capacity, Dataplane, Hook, Packet, PacketPath, Placement, ReferenceModel, Service,
    ServiceKey, ServiceTable, Statistics, Verdict,
};
use cnikit_test_support::{require, require_root};
use common::{
    CLIENT, CLIENT2, Cluster, Conn, IO_TIMEOUT, TCP_PORT, UDP_PORT, VIP, backend_ip, udp_ask,
    udp_socket,
};

fn tcp_vip() -> ServiceKey {
    ServiceKey::tcp(VIP, 80)
}

fn udp_vip() -> ServiceKey {
    ServiceKey::udp(VIP, 53)
}

fn backends(ids: &[u8], port: u16) -> Vec<SocketAddrV4> {
    ids.iter()
        .map(|&i| SocketAddrV4::new(backend_ip(i), port))
        .collect()
}

fn small_dataplane() -> Dataplane {
    Dataplane::builder()
        .capacity(Capacity {
            services: 64,
            endpoints: 64,
            conntrack: 16_384,
            affinity: 1_024,
            policy_peer_prefixes: 1_024,
            policy_port_prefixes: 1_024,
        })
        .load()
        .unwrap()
}

fn through_vip(mode: AttachMode) {
    let cluster = Cluster::new(&[CLIENT], 3);
    let mut dp = small_dataplane();
    cluster.attach(&mut dp, mode);
    dp.upsert_service(&Service::new(tcp_vip(), backends(&[0, 1, 2], TCP_PORT)))
        .unwrap();
    dp.upsert_service(&Service::new(udp_vip(), backends(&[0, 1, 2], UDP_PORT)))
        .unwrap();
    let client = &cluster.pod(CLIENT).netns;

    // TCP: every connection stays on one backend; together they use all three.
    let mut used = BTreeMap::<Ipv4Addr, usize>::new();
    for _ in 0..60 {
        let mut conn = Conn::open(client, SocketAddrV4::new(VIP, 80)).unwrap();
        assert_eq!(
            conn.peer(),
            SocketAddr::from((VIP, 80)),
            "client sees the VIP"
        );
        let first = conn.ask().unwrap();
        for _ in 0..3 {
            assert_eq!(conn.ask().unwrap(), first, "a connection keeps its backend");
        }
        *used.entry(first).or_default() += 1;
        conn.close();
    }
    assert_eq!(
        used.keys().copied().collect::<Vec<_>>(),
        (0..3).map(backend_ip).collect::<Vec<_>>(),
        "connections spread over every backend: {used:?}"
    );

    // UDP: replies come from the VIP; each flow sticks; flows spread.
    let mut udp_used = BTreeSet::new();
    for port in 0..60u16 {
        let socket = udp_socket(client, SocketAddrV4::new(CLIENT, 20_000 + port));
        let (first, from) = udp_ask(&socket, SocketAddrV4::new(VIP, 53)).unwrap();
        assert_eq!(from, SocketAddr::from((VIP, 53)), "reply source is the VIP");
        assert_eq!(
            udp_ask(&socket, SocketAddrV4::new(VIP, 53)).unwrap().0,
            first
        );
        udp_used.insert(first);
    }
    assert_eq!(udp_used.len(), 3, "{udp_used:?}");

    let tcp = dp.service_stats(&tcp_vip()).unwrap().unwrap();
    assert_eq!(tcp.connections, 60, "{tcp:?}");
    assert!(
        tcp.packets >= 60 * 6 && tcp.reply_packets >= 60 * 5,
        "{tcp:?}"
    );
    assert!(tcp.bytes > tcp.packets * 54, "{tcp:?}");
    let udp = dp.service_stats(&udp_vip()).unwrap().unwrap();
    assert_eq!(
        (udp.connections, udp.packets, udp.reply_packets),
        (60, 120, 120)
    );
    assert_eq!(udp.rejected, 0);
}

#[test]
fn tcp_and_udp_through_a_vip_via_tcx() {
    require_root!("tcp_and_udp_through_a_vip_via_tcx");
    require!(
        "tcp_and_udp_through_a_vip_via_tcx",
        common::TCX,
        common::tcx()
    );
    through_vip(AttachMode::Tcx);
}

#[test]
fn tcp_and_udp_through_a_vip_via_clsact() {
    require_root!("tcp_and_udp_through_a_vip_via_clsact");
    through_vip(AttachMode::Clsact);
}

/// Detaching one endpoint's interface leaves the other endpoints' programs in place: its
/// traffic to the VIP is no longer translated, the other client's still is.
fn detach_one_interface(mode: AttachMode) {
    let cluster = Cluster::new(&[CLIENT, CLIENT2], 2);
    let mut dp = small_dataplane();
    cluster.attach(&mut dp, mode);
    dp.upsert_service(&Service::new(udp_vip(), backends(&[0, 1], UDP_PORT)))
        .unwrap();
    let attached = dp.attachments().count();
    let gone = cluster.pod(CLIENT).host_if.clone();
    assert_eq!(dp.detach_interface(&gone).unwrap(), 2, "both programs");
    assert_eq!(dp.attachments().count(), attached - 2);
    assert!(dp.attachments().all(|(interface, ..)| interface != gone));
    assert_eq!(dp.detach_interface(&gone).unwrap(), 0, "idempotent");

    let kept = udp_socket(
        &cluster.pod(CLIENT2).netns,
        SocketAddrV4::new(CLIENT2, 21_000),
    );
    let (_, from) = udp_ask(&kept, SocketAddrV4::new(VIP, 53)).unwrap();
    assert_eq!(
        from,
        SocketAddr::from((VIP, 53)),
        "the other client is translated"
    );
    let detached = udp_socket(
        &cluster.pod(CLIENT).netns,
        SocketAddrV4::new(CLIENT, 21_000),
    );
    assert!(
        udp_ask(&detached, SocketAddrV4::new(VIP, 53)).is_err(),
        "no translation without the programs: the VIP answers nobody"
    );
}

#[test]
fn detach_interface_removes_only_that_endpoint_via_tcx() {
    require_root!("detach_interface_removes_only_that_endpoint_via_tcx");
    require!(
        "detach_interface_removes_only_that_endpoint_via_tcx",
        common::TCX,
        common::tcx()
    );
    detach_one_interface(AttachMode::Tcx);
}

#[test]
fn detach_interface_removes_only_that_endpoint_via_clsact() {
    require_root!("detach_interface_removes_only_that_endpoint_via_clsact");
    detach_one_interface(AttachMode::Clsact);
}

/// Which backend the reference model gives a new flow (same Maglev table and hash as the
/// kernel).
fn predicted(service: &Service, client: SocketAddrV4) -> Ipv4Addr {
    let mut model = ReferenceModel::default();
    model.upsert_service(service).unwrap();
    let packet = Packet::udp(
        (*client.ip(), client.port()),
        (service.key.vip, service.key.port),
        b"",
    );
    match model.process(Hook::FromEndpoint, &packet).unwrap() {
        Verdict::Pass(p) => p.dst,
        other => panic!("{other:?}"),
    }
}

#[test]
fn backend_changes_keep_connections_and_move_only_the_expected_flows() {
    require_root!("backend_changes_keep_connections_and_move_only_the_expected_flows");
    let cluster = Cluster::new(&[CLIENT], 4);
    let mut dp = small_dataplane();
    cluster.attach(&mut dp, AttachMode::Auto);
    let client = &cluster.pod(CLIENT).netns;
    let three = Service::new(tcp_vip(), backends(&[0, 1, 2], TCP_PORT));
    dp.upsert_service(&three).unwrap();
    let udp_three = Service::new(udp_vip(), backends(&[0, 1, 2], UDP_PORT));
    dp.upsert_service(&udp_three).unwrap();

    let mut conns: Vec<(Conn, Ipv4Addr)> = (0..30)
        .map(|_| {
            let mut c = Conn::open(client, SocketAddrV4::new(VIP, 80)).unwrap();
            let b = c.ask().unwrap();
            (c, b)
        })
        .collect();
    let flows: Vec<SocketAddrV4> = (0..400)
        .map(|i| SocketAddrV4::new(CLIENT, 30_000 + i))
        .collect();
    let sockets: Vec<_> = flows.iter().map(|f| udp_socket(client, *f)).collect();
    let before: Vec<Ipv4Addr> = sockets
        .iter()
        .map(|s| udp_ask(s, SocketAddrV4::new(VIP, 53)).unwrap().0)
        .collect();
    for (flow, backend) in flows.iter().zip(&before) {
        assert_eq!(
            *backend,
            predicted(&udp_three, *flow),
            "kernel = model for {flow}"
        );
    }

    // Add a fourth backend while everything runs.
    let four = backends(&[0, 1, 2, 3], TCP_PORT);
    dp.replace_backends(&tcp_vip(), &four).unwrap();
    let udp_four = Service::new(udp_vip(), backends(&[0, 1, 2, 3], UDP_PORT));
    dp.replace_backends(&udp_vip(), &udp_four.backends).unwrap();
    for (conn, backend) in &mut conns {
        assert_eq!(
            conn.ask().unwrap(),
            *backend,
            "established connection kept its backend"
        );
    }
    // Existing UDP flows keep their (still present) backends.
    for (socket, backend) in sockets.iter().zip(&before) {
        assert_eq!(
            udp_ask(socket, SocketAddrV4::new(VIP, 53)).unwrap().0,
            *backend
        );
    }
    // New flows: exactly Maglev's choice; about a quarter land elsewhere than the old set would
    // have put them, almost all of them on the new backend.
    let mut moved = 0;
    let mut to_new = 0;
    for i in 0..400 {
        let flow = SocketAddrV4::new(CLIENT, 31_000 + i);
        let socket = udp_socket(client, flow);
        let backend = udp_ask(&socket, SocketAddrV4::new(VIP, 53)).unwrap().0;
        assert_eq!(
            backend,
            predicted(&udp_four, flow),
            "kernel = model for {flow}"
        );
        if backend != predicted(&udp_three, flow) {
            moved += 1;
            to_new += usize::from(backend == backend_ip(3));
        }
    }
    assert!((60..=140).contains(&moved), "moved {moved} of 400");
    assert!(
        to_new * 100 >= moved * 90,
        "{to_new} of {moved} moved to the new backend"
    );

    // Remove a backend that has connections: they go on (graceful), new ones avoid it.
    let (gone_conns, kept): (Vec<_>, Vec<_>) =
        conns.into_iter().partition(|(_, b)| *b == backend_ip(1));
    assert!(!gone_conns.is_empty());
    dp.replace_backends(&tcp_vip(), &backends(&[0, 2, 3], TCP_PORT))
        .unwrap();
    for (mut conn, backend) in gone_conns.into_iter().chain(kept) {
        assert_eq!(
            conn.ask().unwrap(),
            backend,
            "zero failed established connections"
        );
        conn.close();
    }
    for _ in 0..30 {
        let mut c = Conn::open(client, SocketAddrV4::new(VIP, 80)).unwrap();
        assert_ne!(
            c.ask().unwrap(),
            backend_ip(1),
            "new connections avoid the removed backend"
        );
        c.close();
    }
}

#[test]
fn service_without_backends_is_refused_promptly() {
    require_root!("service_without_backends_is_refused_promptly");
    let cluster = Cluster::new(&[CLIENT], 1);
    let mut dp = small_dataplane();
    cluster.attach(&mut dp, AttachMode::Auto);
    dp.upsert_service(&Service::new(tcp_vip(), [])).unwrap();
    dp.upsert_service(&Service::new(udp_vip(), [])).unwrap();
    let client = &cluster.pod(CLIENT).netns;

    let err = client
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(10)))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    let socket = client
        .run(|| std::net::UdpSocket::bind((CLIENT, 0)))
        .unwrap();
    socket.connect((VIP, 53)).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.send(b"anyone?").unwrap();
    let err = socket.recv(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    assert_eq!(dp.service_stats(&tcp_vip()).unwrap().unwrap().rejected, 1);
    assert_eq!(dp.service_stats(&udp_vip()).unwrap().unwrap().rejected, 1);

    // Backends appear: the same VIP works at once.
    dp.replace_backends(&tcp_vip(), &backends(&[0], TCP_PORT))
        .unwrap();
    let mut conn = Conn::open(client, SocketAddrV4::new(VIP, 80)).unwrap();
    assert_eq!(conn.ask().unwrap(), backend_ip(0));
}

#[test]
fn programs_inside_the_endpoint_translate_and_reject() {
    require_root!("programs_inside_the_endpoint_translate_and_reject");
    // As for an exclusive ENI: the programs sit on the interface inside the pod.
    let cluster = Cluster::new(&[CLIENT], 2);
    let mut dp = small_dataplane();
    let client = cluster.pod(CLIENT);
    client
        .netns
        .run(|| dp.attach_endpoint(&client.pod_if, Placement::InsideEndpoint, AttachMode::Auto))
        .unwrap();
    dp.upsert_service(&Service::new(tcp_vip(), backends(&[0, 1], TCP_PORT)))
        .unwrap();
    dp.upsert_service(&Service::new(udp_vip(), [])).unwrap();
    let mut conn = Conn::open(&client.netns, SocketAddrV4::new(VIP, 80)).unwrap();
    assert_eq!(conn.peer(), SocketAddr::from((VIP, 80)));
    let backend = conn.ask().unwrap();
    assert!(backend == backend_ip(0) || backend == backend_ip(1));
    conn.close();
    let socket = client
        .netns
        .run(|| std::net::UdpSocket::bind((CLIENT, 0)))
        .unwrap();
    socket.connect((VIP, 53)).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.send(b"x").unwrap();
    assert_eq!(
        socket.recv(&mut [0u8; 4]).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn backend_set_updates_are_atomic_under_traffic() {
    require_root!("backend_set_updates_are_atomic_under_traffic");
    let cluster = Cluster::new(&[CLIENT], 3);
    let mut dp = small_dataplane();
    cluster.attach(&mut dp, AttachMode::Auto);
    let sets = [backends(&[0, 1], UDP_PORT), backends(&[1, 2], UDP_PORT)];
    dp.upsert_service(&Service::new(udp_vip(), sets[0].clone()))
        .unwrap();
    let client = &cluster.pod(CLIENT).netns;
    let done = AtomicBool::new(false);
    let updates = AtomicU64::new(0);
    let answers: HashMap<Ipv4Addr, usize> = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| {
            let mut answers = HashMap::new();
            // New flows only (fresh source ports): each picks from whichever set is in force.
            for _ in 0..600 {
                let socket = udp_socket(client, SocketAddrV4::new(CLIENT, 0));
                let (backend, from) = udp_ask(&socket, SocketAddrV4::new(VIP, 53)).unwrap();
                assert_eq!(from, SocketAddr::from((VIP, 53)));
                *answers.entry(backend).or_insert(0) += 1;
            }
            done.store(true, Ordering::Relaxed);
            answers
        });
        let mut i = 0;
        while !done.load(Ordering::Relaxed) {
            i += 1;
            dp.replace_backends(&udp_vip(), &sets[i % 2]).unwrap();
            updates.fetch_add(1, Ordering::Relaxed);
        }
        traffic.join().unwrap()
    });
    // Every request was answered (no rejection, no loss) by a backend of one of the sets.
    assert_eq!(answers.values().sum::<usize>(), 600);
    assert!(
        answers
            .keys()
            .all(|b| (0..3).map(backend_ip).any(|x| x == *b))
    );
    assert!(
        updates.load(Ordering::Relaxed) > 20,
        "updates raced the traffic"
    );
}
