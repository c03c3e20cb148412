//! `cni_add_del`: CNI `ADD` and `DEL` latency of the `cnikit` plugin (veth mode, warm pool, the
//! agent on the embedded simulator) beside Debian's reference `ptp` plugin with `host-local`
//! IPAM doing the equivalent wiring (a veth pair, a /32 or /20 address, routes), both executed
//! through the same exec harness in the same run, alternating; then pods per second for a
//! 100-pod burst on a warm node, for both.
//!
//! The plugin is `cnikit-examples`' `cnikit` linked statically, as nodes should run it, which
//! this package's build script builds for release builds (`cargo bench`); test builds, and
//! machines where that build fails, run `cnikit-bench-plugin`, this package's dynamically
//! linked build of the same binary (a bench cannot use another package's binaries). The
//! `BENCH` line says which (`plugin=static|dynamic`). This executable plays `cnikit-agent`
//! itself (through a symlink). Everything runs in throwaway namespaces. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use cnikit_benches::{Summary, ms, privilege, report, smoke_mode};
use cnikit_examples::harness::{
    Binaries, CniOutcome, TestNode, dispatch_self_exec, run_with_stdin,
};
use cnikit_netns_setup::{
    Netns,
    netlink::{NetlinkHandle, NewLink, RtNetlink, VethPeer},
};
use cnikit_test_support::netns::{Role, TestNetns};
use serde_json::{Value, json};

const PTP: &str = "/usr/lib/cni/ptp";

fn ptp_conf(dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false, "mtu": 1500,
        "ipam": { "type": "host-local", "subnet": "198.19.64.0/18", "dataDir": dir,
                  "routes": [{ "dst": "0.0.0.0/0" }] }
    })
}

/// One `ptp` invocation through the same harness as ours.
fn ptp(node: &TestNode, conf: &Value, command: &str, id: &str, pod: &TestNetns) -> CniOutcome {
    let mut cmd = node.node.command(PTP).unwrap();
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", pod.path())
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_with_stdin(cmd, &serde_json::to_vec(conf).unwrap()).unwrap();
    assert!(out.success, "ptp {command}: {} {}", out.stdout, out.stderr);
    out
}

fn ours(node: &TestNode, conf: &Value, command: &str, id: &str, pod: &TestNetns) -> CniOutcome {
    let out = if command == "ADD" {
        node.add(conf, id, pod, "bench", id).unwrap()
    } else {
        node.cni(command, conf, id, Some(pod.path()), "eth0", "")
            .unwrap()
    };
    assert!(
        out.success,
        "cnikit {command}: {} {}",
        out.stdout, out.stderr
    );
    out
}

/// Creates a veth pair between the node and `pod` (both ends up) and deletes it, `rounds`
/// times, over one netlink socket in the node namespace; returns how long each deletion took.
fn veth_deletions(node: &TestNode, pod: &TestNetns, rounds: usize) -> Vec<Duration> {
    let pod_ns = Netns::from_path(pod.path()).unwrap();
    node.node.run_async(|| async {
        let nl = RtNetlink::connect(&Netns::current().unwrap()).unwrap();
        let mut took = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let link = NewLink::Veth {
                name: "cnkfloor0".into(),
                mtu: None,
                mac: None,
                up: true,
                peer: VethPeer {
                    name: "floor0".into(),
                    netns: Some(pod_ns.clone()),
                    mtu: None,
                    mac: None,
                    // Not at creation (ENOTCONN); brought up below, as a pod's is.
                    up: false,
                },
            };
            nl.add_link(&link).await.unwrap();
            pod.ip(&["link", "set", "floor0", "up"]).unwrap();
            let index = nl.link_by_name("cnkfloor0").await.unwrap().unwrap().index;
            let started = Instant::now();
            nl.del_link(index).await.unwrap();
            took.push(started.elapsed());
        }
        took
    })
}

/// Waits until the agent has deleted the veth pairs of the pods whose `DEL` answered.
fn retired(node: &TestNode) {
    assert!(
        node.wait_retired(Duration::from_secs(10)),
        "the agent did not delete the retired veth pairs"
    );
}

/// Runs `op` for every pod at once (one thread each); returns the wall time.
fn burst(pods: &[TestNetns], op: impl Fn(usize, &TestNetns) + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            let op = &op;
            s.spawn(move || op(i, pod));
        }
    });
    started.elapsed()
}

fn per_second(n: usize, d: Duration) -> String {
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let rate = n as f64 / d.as_secs_f64();
    format!("{rate:.1}")
}

fn run() {
    if !privilege::root("cni_add_del") {
        return;
    }
    if !Path::new(PTP).exists() {
        assert!(
            !privilege::in_ci(),
            "{PTP} is missing (containernetworking-plugins)"
        );
        println!("SKIP cni_add_del: {PTP} is missing");
        return;
    }
    let smoke = smoke_mode();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("cnikit-bench-cni-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The agent is this executable (started once); the plugin is its own binary, as small as
    // the shipped `cnikit`, since its start is part of every ADD and DEL.
    let mut bins = Binaries::self_exec(&dir).unwrap();
    let (plugin, linked) = match env!("CNIKIT_STATIC_PLUGIN") {
        "" => (env!("CARGO_BIN_EXE_cnikit-bench-plugin"), "dynamic"),
        path => (path, "static"),
    };
    bins.plugin = plugin.into();
    let mut node = TestNode::new(bins).unwrap();
    // A node with room for the burst, warmed up before anything is measured.
    let burst_size = if smoke { 8 } else { 100 };
    node.agent_config["cloud"] = json!({ "provider": "simulator", "region": { "instances": [{
        "id": "i-sim0000000000000001", "instance_type": "ecs.g7.4xlarge",
        "vswitch_id": "vsw-sim0000000000000001", "security_group_ids": ["sg-sim0000000000000001"] }] } });
    node.agent_config["pool"]["shared"] =
        json!({ "min_idle": 4, "max_idle": burst_size + 20, "warm_up": burst_size + 10 });
    node.agent_config["dns"] = Value::Null;
    node.start_agent().unwrap();
    let warm = cnikit_test_support::process::wait_until(Duration::from_secs(60), || {
        node.node
            .run_async(|| async { node.stats().await.unwrap() })
            .pool
            .idle
            >= u32::try_from(burst_size).unwrap()
    });
    assert!(warm, "the pool did not warm up");

    let conf = node.netconf("1.0.0");
    let ptp_dir = dir.join("host-local");
    let ptp_conf = ptp_conf(&ptp_dir);
    let pods: Vec<TestNetns> = (0..burst_size)
        .map(|_| TestNetns::create(Role::Pod).unwrap())
        .collect();

    // Sequential ADD/DEL, the two plugins alternating on the same pod namespaces.
    let rounds = if smoke { 3 } else { 200 };
    let (mut our_add, mut our_del, mut ptp_add, mut ptp_del) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut our_del_settled = Vec::new();
    for r in 0..rounds {
        let pod = &pods[r % pods.len()];
        let id = format!("seq-{r}");
        let a = ours(&node, &conf, "ADD", &id, pod);
        our_add.push(a.elapsed);
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = a.output;
        let started = Instant::now();
        our_del.push(ours(&node, &with_prev, "DEL", &id, pod).elapsed);
        // Our DEL answers once the pod is unwired; the agent deletes the veth pair after that
        // (the kernel's RCU barrier, 10-20 ms). `ptp` runs once that is done, so neither
        // plugin's kernel work lands in the other's numbers.
        retired(&node);
        our_del_settled.push(started.elapsed());
        let a = ptp(&node, &ptp_conf, "ADD", &id, pod);
        ptp_add.push(a.elapsed);
        let mut with_prev = ptp_conf.clone();
        with_prev["prevResult"] = a.output;
        ptp_del.push(ptp(&node, &with_prev, "DEL", &id, pod).elapsed);
    }
    // The floor both sides stand on: starting the plugin through the same harness (`VERSION`
    // does no work), alternating.
    let (mut our_exec, mut ptp_exec) = (Vec::new(), Vec::new());
    for r in 0..rounds.min(100) {
        let pod = &pods[r % pods.len()];
        our_exec.push(ours(&node, &conf, "VERSION", "floor", pod).elapsed);
        ptp_exec.push(ptp(&node, &ptp_conf, "VERSION", "floor", pod).elapsed);
    }
    let [oe, pe] = [&our_exec, &ptp_exec].map(|s| Summary::of(s).unwrap());
    // The kernel's share of every DEL: deleting a veth pair (one netlink request from a
    // process already running; it returns after an RCU barrier).
    let veth_del = Summary::of(&veth_deletions(&node, &pods[0], rounds.min(100))).unwrap();
    let [oa, od, pa, pd, os] =
        [&our_add, &our_del, &ptp_add, &ptp_del, &our_del_settled].map(|s| Summary::of(s).unwrap());
    report(
        "cni_add_del",
        &[
            ("rounds", &rounds),
            ("plugin", &linked),
            ("cnikit_add_p50_ms", &ms(oa.p50)),
            ("cnikit_add_p99_ms", &ms(oa.p99)),
            ("ptp_add_p50_ms", &ms(pa.p50)),
            ("ptp_add_p99_ms", &ms(pa.p99)),
            ("cnikit_del_p50_ms", &ms(od.p50)),
            ("cnikit_del_p99_ms", &ms(od.p99)),
            ("cnikit_del_pair_gone_p50_ms", &ms(os.p50)),
            ("ptp_del_p50_ms", &ms(pd.p50)),
            ("ptp_del_p99_ms", &ms(pd.p99)),
            ("cnikit_exec_p50_ms", &ms(oe.p50)),
            ("ptp_exec_p50_ms", &ms(pe.p50)),
            ("kernel_veth_del_p50_ms", &ms(veth_del.p50)),
            (
                "add_p50_ratio",
                &format!("{:.2}", oa.p50.as_secs_f64() / pa.p50.as_secs_f64()),
            ),
            (
                "del_p50_ratio",
                &format!("{:.2}", od.p50.as_secs_f64() / pd.p50.as_secs_f64()),
            ),
        ],
    );

    // The burst: every pod at once on the warm node, then every DEL at once; same for ptp.
    let calls_before = node
        .node
        .run_async(|| async { node.stats().await.unwrap() })
        .pool
        .total_cloud_calls();
    let our_burst = burst(&pods, |i, pod| {
        ours(&node, &conf, "ADD", &format!("burst-{i}"), pod);
    });
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    assert_eq!(stats.endpoints, burst_size);
    let our_burst_del = burst(&pods, |i, pod| {
        ours(&node, &conf, "DEL", &format!("burst-{i}"), pod);
    });
    retired(&node);
    let calls = node
        .node
        .run_async(|| async { node.stats().await.unwrap() })
        .pool
        .total_cloud_calls()
        - calls_before;
    let ptp_burst = burst(&pods, |i, pod| {
        ptp(&node, &ptp_conf, "ADD", &format!("burst-{i}"), pod);
    });
    let ptp_burst_del = burst(&pods, |i, pod| {
        ptp(&node, &ptp_conf, "DEL", &format!("burst-{i}"), pod);
    });
    report(
        "cni_burst",
        &[
            ("pods", &burst_size),
            ("cnikit_add_pods_per_s", &per_second(burst_size, our_burst)),
            ("ptp_add_pods_per_s", &per_second(burst_size, ptp_burst)),
            (
                "cnikit_del_pods_per_s",
                &per_second(burst_size, our_burst_del),
            ),
            ("ptp_del_pods_per_s", &per_second(burst_size, ptp_burst_del)),
            ("cnikit_burst_ms", &ms(our_burst)),
            ("ptp_burst_ms", &ms(ptp_burst)),
            ("cloud_calls_during_burst", &calls),
        ],
    );
    node.stop_agent().unwrap();
    drop(node);
    std::fs::remove_dir_all(&dir).ok();
}

fn main() -> ExitCode {
    if let Some(code) = dispatch_self_exec() {
        return code;
    }
    run();
    // Criterion's own flags (`--bench`, `--test`) are accepted and need no other work here.
    std::io::stdout().flush().ok();
    ExitCode::SUCCESS
}
