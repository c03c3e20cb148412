//! Runs inside the qemu VM (`cargo xtask vmtest`) on Debian's 6.1 and 6.12 kernels: the verifier
//! of an older kernel accepts both programs, `AttachMode::Auto` picks clsact below 6.6, and the
//! datapath behaves the same there: services over real sockets, prompt rejection, policy, and a
//! generated differential sequence against the reference model.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
mod generated;

use std::{
    io,
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use cnikit_ebpf_dataplane::{
    AttachMode, AttachedVia, Capacity, Dataplane, EndpointPolicy, Peer, PolicyTable, Rule, Service,
    ServiceKey, ServiceTable, Statistics, tcx_supported,
};
use common::{CLIENT, CLIENT2, Cluster, Conn, IO_TIMEOUT, TCP_PORT, VIP, backend_ip};

fn in_vm() {
    assert_eq!(
        std::env::var("CNIKIT_VM").as_deref(),
        Ok("1"),
        "run through `cargo xtask vmtest`"
    );
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
fn verifier_accepts_the_programs_and_the_datapath_works() {
    in_vm();
    let mut dp = Dataplane::builder()
        .capacity(Capacity {
            conntrack: 4_096,
            affinity: 1_024,
            ..Capacity::default()
        })
        .load()
        .unwrap();
    let verified = dp.verified_instructions().unwrap();
    eprintln!("kernel {}: verifier processed {verified:?}", release());

    let cluster = Cluster::new(&[CLIENT, CLIENT2], 2);
    cluster.attach(&mut dp, AttachMode::Auto);
    let expected = if tcx_supported() {
        AttachedVia::Tcx
    } else {
        AttachedVia::Clsact
    };
    assert!(dp.attachments().all(|(_, _, _, via, _)| via == expected));

    let key = ServiceKey::tcp(VIP, 80);
    let backends = [0, 1].map(|i| SocketAddrV4::new(backend_ip(i), TCP_PORT));
    dp.upsert_service(&Service::new(key, backends)).unwrap();
    let client = &cluster.pod(CLIENT).netns;
    let mut conn = Conn::open(client, SocketAddrV4::new(VIP, 80)).unwrap();
    assert_eq!(conn.peer(), SocketAddr::from((VIP, 80)));
    let first = conn.ask().unwrap();
    assert_eq!(conn.ask().unwrap(), first);
    conn.close();

    let empty = ServiceKey::tcp(VIP, 81);
    dp.upsert_service(&Service::new(empty, [])).unwrap();
    let refused = client
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((VIP, 81)), IO_TIMEOUT))
        .unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

    for i in 0..2 {
        dp.set_policy(
            backend_ip(i),
            &EndpointPolicy::ingress([Rule::new([Peer::host(CLIENT)], [])]),
        )
        .unwrap();
    }
    let denied = cluster
        .pod(CLIENT2)
        .netns
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(2)));
    assert_eq!(denied.unwrap_err().kind(), io::ErrorKind::TimedOut);
    let mut conn = Conn::open(client, SocketAddrV4::new(VIP, 80)).unwrap();
    conn.ask().unwrap();
    conn.close();
    let drops: u64 = (0..2)
        .map(|i| {
            dp.endpoint_stats(backend_ip(i))
                .unwrap()
                .unwrap()
                .drops
                .ingress_policy
        })
        .sum();
    assert!(drops >= 1);
    dp.detach_all().unwrap();
}

#[test]
#[ignore = "runs in the qemu VM: cargo xtask vmtest"]
fn kernel_and_model_agree_on_this_kernel() {
    in_vm();
    let coverage = generated::run_sequence(0x5eed_0000_0000_0001, 250);
    eprintln!("kernel {}: {coverage:?}", release());
    assert!(coverage.translated > 0 && coverage.dropped > 0 && coverage.rejected > 0);
}
