//! Differential tests: the same generated sequences of control operations and packets go
//! through the kernel programs (`BPF_PROG_TEST_RUN`, real verifier-checked programs on real
//! maps) and through the reference model; verdicts, rewritten packets, control-plane results,
//! counters and connection-tracking tables must be identical. Also: typed errors and capacity.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod generated;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use cnikit_ebpf_dataplane::{
    Capacity, Dataplane, EndpointPolicy, Error, Hook, Packet, PacketPath, Peer, PolicyTable,
    PortMatch, Protocol, ReferenceModel, Rule, Service, ServiceKey, ServiceTable, Statistics,
    Table, Timeouts, Verdict, tcp_flags,
};
use cnikit_test_support::require_root;
use generated::run_sequence;

#[test]
fn kernel_and_model_agree_on_generated_sequences() {
    require_root!("kernel_and_model_agree_on_generated_sequences");
    for seed in [
        0x1234_5678_9abc_def1,
        0x0fed_cba9_8765_4321,
        0x5eed_0000_0000_0001,
        0xdead_beef_cafe_f00d,
        0x0123_4567_89ab_cdef,
        0x7777_1111_3333_5555,
    ] {
        let c = run_sequence(seed, 500);
        eprintln!("seed {seed:#x}: {c:?}");
        assert!(
            c.translated >= 20
                && c.replies_translated >= 10
                && c.rejected >= 2
                && c.dropped >= 10
                && c.passed >= 50
                && c.control_errors >= 5,
            "seed {seed:#x} exercised too little: {c:?}"
        );
    }
}

#[test]
fn typed_errors_leave_state_untouched() {
    require_root!("typed_errors_leave_state_untouched");
    let mut dp = Dataplane::builder()
        .capacity(Capacity {
            services: 2,
            endpoints: 2,
            policy_peer_prefixes: 8,
            ..Capacity::default()
        })
        .load()
        .unwrap();
    let vip = Ipv4Addr::new(198, 19, 0, 1);
    let backend = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), 8080);
    let key = ServiceKey::tcp(vip, 80);

    let too_many: Vec<SocketAddrV4> = (0..257u32)
        .map(|i| SocketAddrV4::new(Ipv4Addr::from(0xc612_0100 + i), 80))
        .collect();
    assert!(matches!(
        dp.upsert_service(&Service::new(key, too_many)),
        Err(Error::TooManyBackends {
            count: 257,
            max: 256,
            ..
        })
    ));
    for bad in [
        Service::new(ServiceKey::tcp(vip, 0), [backend]),
        Service::new(key, [backend, backend]),
        Service::new(
            ServiceKey {
                vip,
                port: 80,
                protocol: Protocol::Sctp,
            },
            [backend],
        ),
        Service::new(key, [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 1)]),
        Service::new(key, [backend]).with_client_ip_affinity(Duration::from_millis(10)),
    ] {
        assert!(
            matches!(dp.upsert_service(&bad), Err(Error::InvalidService { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        dp.replace_backends(&key, &[backend]),
        Err(Error::UnknownService { .. })
    ));
    dp.upsert_service(&Service::new(key, [backend])).unwrap();
    dp.upsert_service(&Service::new(ServiceKey::udp(vip, 53), [backend]))
        .unwrap();
    let third = ServiceKey::tcp(vip, 81);
    assert!(matches!(
        dp.upsert_service(&Service::new(third, [backend])),
        Err(Error::CapacityExceeded {
            table: Table::Services,
            capacity: 2
        })
    ));
    // The full table still serves and can still be updated in place or shrunk.
    dp.replace_backends(&key, &[backend]).unwrap();
    let syn = Packet::tcp(
        (Ipv4Addr::new(198, 18, 0, 2), 40_000),
        (vip, 80),
        tcp_flags::SYN,
    );
    assert!(dp.process(Hook::FromEndpoint, &syn).unwrap().is_pass());
    assert!(dp.remove_service(&ServiceKey::udp(vip, 53)).unwrap());
    dp.upsert_service(&Service::new(third, [backend])).unwrap();

    // Endpoints and policy.
    let ep = Ipv4Addr::new(198, 18, 0, 2);
    dp.add_endpoint(ep).unwrap();
    dp.add_endpoint(Ipv4Addr::new(198, 18, 0, 3)).unwrap();
    assert!(matches!(
        dp.add_endpoint(Ipv4Addr::new(198, 18, 0, 4)),
        Err(Error::CapacityExceeded {
            table: Table::Endpoints,
            ..
        })
    ));
    let distinct: Vec<Rule> = (1..=65u16)
        .map(|p| Rule::new([], [PortMatch::port(Protocol::Udp, p)]))
        .collect();
    assert!(matches!(
        dp.set_policy(ep, &EndpointPolicy::ingress(distinct)),
        Err(Error::TooManyRuleGroups {
            groups: 65,
            max: 64,
            egress: false,
            ..
        })
    ));
    let bad_except = EndpointPolicy::ingress([Rule::new(
        [Peer::cidr("198.18.0.0/24".parse().unwrap()).except("198.19.0.0/24".parse().unwrap())],
        [],
    )]);
    assert!(matches!(
        dp.set_policy(ep, &bad_except),
        Err(Error::InvalidPolicy { .. })
    ));

    // A policy that fits, then one that does not: the first stays in force.
    let allow_one = EndpointPolicy::ingress([Rule::new(
        [Peer::host(Ipv4Addr::new(198, 18, 9, 1))],
        [PortMatch::port(Protocol::Tcp, 8080)],
    )]);
    dp.set_policy(ep, &allow_one).unwrap();
    let hosts: Vec<Peer> = (1..=20)
        .map(|i| Peer::host(Ipv4Addr::new(198, 18, 5, i)))
        .collect();
    assert!(matches!(
        dp.set_policy(ep, &EndpointPolicy::ingress([Rule::new(hosts, [])])),
        Err(Error::CapacityExceeded {
            table: Table::PolicyPeers,
            capacity: 8
        })
    ));
    assert_eq!(dp.policy(ep), Some(allow_one));
    let allowed = Packet::tcp(
        (Ipv4Addr::new(198, 18, 9, 1), 1000),
        (ep, 8080),
        tcp_flags::SYN,
    );
    let denied = Packet::tcp(
        (Ipv4Addr::new(198, 18, 9, 2), 1000),
        (ep, 8080),
        tcp_flags::SYN,
    );
    assert!(dp.process(Hook::ToEndpoint, &allowed).unwrap().is_pass());
    assert_eq!(
        dp.process(Hook::ToEndpoint, &denied).unwrap(),
        Verdict::Drop
    );

    // Bad configuration is refused before anything is loaded.
    let zero = Capacity {
        services: 0,
        ..Capacity::default()
    };
    assert!(matches!(
        Dataplane::builder().capacity(zero).load(),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn model_timeouts_expire_connections() {
    // The model alone, with a frozen clock (the kernel's clock cannot be moved).
    let mut model = ReferenceModel::new(Capacity::default(), Timeouts::default());
    let key = ServiceKey::udp(Ipv4Addr::new(198, 19, 0, 1), 53);
    let backends: Vec<SocketAddrV4> = (1..=8)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, i), 5353))
        .collect();
    model
        .upsert_service(&Service::new(key, backends.clone()))
        .unwrap();
    model.set_clock(Some(1_000_000_000));
    let q = Packet::udp((Ipv4Addr::new(198, 18, 0, 2), 4000), (key.vip, 53), b"");
    let first = model.process(Hook::FromEndpoint, &q).unwrap();
    // Remove the chosen backend: the flow moves at once (UDP), but only because it is gone.
    let Verdict::Pass(out) = first else { panic!() };
    let rest: Vec<SocketAddrV4> = backends
        .into_iter()
        .filter(|b| *b.ip() != out.dst)
        .collect();
    model.replace_backends(&key, &rest).unwrap();
    let Verdict::Pass(moved) = model.process(Hook::FromEndpoint, &q).unwrap() else {
        panic!()
    };
    assert_ne!(moved.dst, out.dst);
    // The service entry (re-pointed) and one flow entry per backend the flow used.
    assert_eq!(model.conntrack().unwrap().len(), 3);
    model.set_clock(Some(1_000_000_000 + 61_000_000_000));
    assert!(
        model.conntrack().unwrap().is_empty(),
        "idle UDP flows expire after 60 s"
    );
}
