//! NetworkPolicy with real sockets between pods: CIDRs with except blocks, ports and port ranges,
//! egress isolation that still lets replies of allowed connections out, policies on translated
//! service traffic, atomic replacement, and drop counters per endpoint and reason.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use cnikit_ebpf_dataplane::{
    AttachMode, Dataplane, EndpointPolicy, Ipv4Cidr, Peer, PolicyTable, PortMatch, Protocol, Rule,
    Service, ServiceKey, ServiceTable, Statistics,
};
use cnikit_test_support::{netns::TestNetns, require_root, traffic::UdpSink};
use common::{
    CLIENT, CLIENT2, Cluster, Conn, TCP_PORT, UDP_PORT, VIP, backend_ip, udp_ask, udp_socket,
};

/// How long a connection attempt may take before it counts as dropped (well above a handshake
/// on a loaded machine, below the first SYN retransmission).
const DENIED_WAIT: Duration = Duration::from_millis(900);

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

/// Whether a TCP connection from `netns` to `to` gets established (and answered).
fn reachable(netns: &TestNetns, to: SocketAddrV4) -> bool {
    match netns.run(|| TcpStream::connect_timeout(&SocketAddr::V4(to), DENIED_WAIT)) {
        Ok(_) => {
            let mut conn = Conn::open(netns, to).unwrap();
            conn.ask().unwrap();
            conn.close();
            true
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => false,
        Err(e) => panic!("connecting to {to}: {e}"),
    }
}

#[test]
fn ingress_and_egress_policy_with_real_sockets() {
    require_root!("ingress_and_egress_policy_with_real_sockets");
    let mut cluster = Cluster::new(&[CLIENT, CLIENT2], 2);
    let server = backend_ip(0);
    let server_index = cluster
        .net
        .pods()
        .iter()
        .position(|p| p.addr == server)
        .unwrap();
    cluster.serve(server_index, 9005, 9005);
    cluster.serve(server_index, 9011, 9011);
    let mut dp = Dataplane::load().unwrap();
    cluster.attach(&mut dp, AttachMode::Auto);
    let a = &cluster.pod(CLIENT).netns;
    let b = &cluster.pod(CLIENT2).netns;
    let s = &cluster.pod(server).netns;
    let at = |port| SocketAddrV4::new(server, port);

    // Not isolated: everything passes.
    assert!(reachable(b, at(TCP_PORT)));
    let established_b = {
        let mut c = Conn::open(b, at(TCP_PORT)).unwrap();
        c.ask().unwrap();
        c
    };

    // The server accepts 198.18.0.0/24 minus CLIENT2 on TCP 8080, TCP 9000-9010 and UDP 5353,
    // and may open nothing itself.
    let policy = EndpointPolicy::ingress([Rule::new(
        [Peer::cidr(cidr("198.18.0.0/24")).except(Ipv4Cidr::host(CLIENT2))],
        [
            PortMatch::port(Protocol::Tcp, TCP_PORT),
            PortMatch::range(Protocol::Tcp, 9000..=9010),
            PortMatch::port(Protocol::Udp, UDP_PORT),
        ],
    )])
    .with_egress([]);
    dp.set_policy(server, &policy).unwrap();
    assert_eq!(dp.policy(server), Some(policy));

    assert!(reachable(a, at(TCP_PORT)), "allowed peer and port");
    assert!(!reachable(b, at(TCP_PORT)), "peer in an except block");
    assert!(reachable(a, at(9005)), "port inside the range");
    assert!(!reachable(a, at(9011)), "port outside the range");
    let socket = udp_socket(a, SocketAddrV4::new(CLIENT, 0));
    let (answered_by, from) = udp_ask(&socket, at(UDP_PORT)).unwrap();
    assert_eq!((answered_by, from), (server, SocketAddr::V4(at(UDP_PORT))));

    // The verdict is kept for the life of a connection: the one opened before still works.
    let mut established_b = established_b;
    assert_eq!(established_b.ask().unwrap(), server);
    established_b.close();

    // Egress isolation: the server's replies pass (above); what it opens itself does not.
    let sink = UdpSink::bind_in(a, (CLIENT, 7000).into()).unwrap();
    cnikit_test_support::traffic::send_udp(s, (server, 0).into(), sink.local_addr().unwrap(), 3)
        .unwrap();
    assert_eq!(sink.receive(3, DENIED_WAIT).unwrap(), 0);

    let counters = dp.endpoint_stats(server).unwrap().unwrap();
    assert!(counters.drops.ingress_policy >= 2, "{counters:?}");
    assert_eq!(counters.drops.egress_policy, 3, "{counters:?}");
    assert!(
        counters.rx_packets > 0 && counters.tx_packets > 0,
        "{counters:?}"
    );

    // Through a VIP, the policy sees the translated packet (peer CLIENT, port 8080).
    let web = ServiceKey::tcp(VIP, 80);
    dp.upsert_service(&Service::new(web, [at(TCP_PORT)]))
        .unwrap();
    assert!(reachable(a, SocketAddrV4::new(VIP, 80)));
    assert!(!reachable(b, SocketAddrV4::new(VIP, 80)));

    // Replacing the policy takes effect for new connections at once.
    let only_b = EndpointPolicy::ingress([Rule::new([Peer::host(CLIENT2)], [])]);
    dp.set_policy(server, &only_b).unwrap();
    assert!(!reachable(a, at(TCP_PORT)));
    assert!(reachable(b, at(9011)), "no ports in the rule: every port");
    // No egress isolation any more.
    cnikit_test_support::traffic::send_udp(s, (server, 0).into(), sink.local_addr().unwrap(), 3)
        .unwrap();
    assert_eq!(sink.receive(3, DENIED_WAIT).unwrap(), 3);

    // The node itself (kubelet probes) passes ingress isolation once its address is known.
    let node = cluster.net.node();
    let from_node = || {
        node.run(|| TcpStream::connect_timeout(&SocketAddr::V4(at(TCP_PORT)), DENIED_WAIT))
            .is_ok()
    };
    assert!(!from_node(), "169.254.1.1 is not in the only rule");
    dp.set_node_addresses(&[cnikit_test_support::pods::GATEWAY])
        .unwrap();
    assert!(from_node(), "the node may always reach its pods");
    assert_eq!(
        dp.node_addresses(),
        vec![cnikit_test_support::pods::GATEWAY]
    );

    assert!(dp.clear_policy(server).unwrap());
    assert!(reachable(a, at(TCP_PORT)) && reachable(b, at(TCP_PORT)));
    assert!(!dp.clear_policy(server).unwrap());
}

#[test]
fn egress_policy_on_a_client() {
    require_root!("egress_policy_on_a_client");
    let cluster = Cluster::new(&[CLIENT], 3);
    let mut dp = Dataplane::load().unwrap();
    cluster.attach(&mut dp, AttachMode::Auto);
    let a = &cluster.pod(CLIENT).netns;
    // Backends live in 198.18.1.0/24; the client may reach them on TCP 8080, except the second.
    dp.set_policy(
        CLIENT,
        &EndpointPolicy::egress([Rule::new(
            [Peer::cidr(cidr("198.18.1.0/24")).except(Ipv4Cidr::host(backend_ip(1)))],
            [PortMatch::any_port(Protocol::Tcp)],
        )]),
    )
    .unwrap();
    assert!(reachable(a, SocketAddrV4::new(backend_ip(0), TCP_PORT)));
    assert!(!reachable(a, SocketAddrV4::new(backend_ip(1), TCP_PORT)));
    assert!(reachable(a, SocketAddrV4::new(backend_ip(2), TCP_PORT)));
    // UDP is not in the rule.
    let socket = udp_socket(a, SocketAddrV4::new(CLIENT, 0));
    socket.set_read_timeout(Some(DENIED_WAIT)).unwrap();
    socket
        .send_to(b"x", SocketAddrV4::new(backend_ip(0), UDP_PORT))
        .unwrap();
    assert!(socket.recv_from(&mut [0u8; 8]).is_err());

    // Egress rules apply to the backend a VIP translates to, not to the VIP.
    let web = ServiceKey::tcp(VIP, 80);
    dp.upsert_service(&Service::new(
        web,
        [SocketAddrV4::new(backend_ip(1), TCP_PORT)],
    ))
    .unwrap();
    assert!(!reachable(a, SocketAddrV4::new(VIP, 80)));
    dp.replace_backends(&web, &[SocketAddrV4::new(backend_ip(2), TCP_PORT)])
        .unwrap();
    assert!(reachable(a, SocketAddrV4::new(VIP, 80)));

    let counters = dp.endpoint_stats(CLIENT).unwrap().unwrap();
    assert_eq!(counters.drops.ingress_policy, 0, "{counters:?}");
    assert!(counters.drops.egress_policy >= 3, "{counters:?}");
    assert_eq!(
        dp.endpoint_stats(Ipv4Addr::new(198, 18, 77, 7)).unwrap(),
        None
    );
}
