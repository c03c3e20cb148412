//! `cnikit-demo --probe`: the eBPF probe on a pod's veth, in throwaway namespaces.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use cnikit_ebpf_dataplane::{AttachMode, Direction, ProbeProgram};
use cnikit_test_support::{
    netns::{Role, TestNetns},
    traffic::{UdpSink, udp_delivered},
};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const POD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BURST: usize = 20;
const QUIET: Duration = Duration::from_millis(300);

/// Runs the probe demo.
pub(crate) fn run() -> Result<()> {
    println!("== cnikit demo: the eBPF probe on a pod's veth, in throwaway namespaces ==");
    let node = TestNetns::create(Role::Node).context("creating the node namespace")?;
    let pod = TestNetns::create(Role::Pod).context("creating the pod namespace")?;
    node.veth_to(&pod, "veth-pod", "eth0")?;
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "veth-pod"])?;
    pod.ip(&["addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"])?;
    println!(
        "namespaces: node={} pod={}; veth-pod ({NODE_IP}) <-> eth0 ({POD_IP})",
        node.name(),
        pod.name()
    );

    let started = Instant::now();
    let mut probe = ProbeProgram::load().context("loading the probe")?;
    println!(
        "object parsed, cnikit_probe accepted by the verifier in {:?}",
        started.elapsed()
    );
    let via = node
        .run(|| probe.attach("veth-pod", Direction::Ingress, AttachMode::Auto))
        .context("attaching")?;
    println!("attached to veth-pod ingress via {via}");

    let sink = UdpSink::bind_in(&node, (NODE_IP, 9000).into())?;
    let send = |probe: &ProbeProgram, label: &str| -> Result<usize> {
        let delivered = udp_delivered(&pod, (POD_IP, 0).into(), &sink, BURST, QUIET)?;
        let c = probe.counters()?;
        println!(
            "{label:<28} delivered {delivered:>2}/{BURST}  counters: packets={} bytes={} dropped={}",
            c.packets, c.bytes, c.dropped
        );
        Ok(delivered)
    };

    ensure!(
        send(&probe, "pod -> node:")? == BURST,
        "traffic did not pass before blocking"
    );
    probe.block_source(POD_IP)?;
    println!("userspace map update: blocklist += {POD_IP}");
    ensure!(
        send(&probe, "pod -> node (blocked):")? == 0,
        "blocked traffic was not dropped"
    );
    probe.unblock_source(POD_IP)?;
    println!("userspace map update: blocklist -= {POD_IP}");
    ensure!(
        send(&probe, "pod -> node (unblocked):")? == BURST,
        "traffic did not pass after unblocking"
    );
    ensure!(
        probe.counters()?.dropped == BURST as u64,
        "drop counter mismatch"
    );

    probe.detach_all()?;
    println!(
        "detached; namespaces {} and {} removed on exit",
        node.name(),
        pod.name()
    );
    Ok(())
}
