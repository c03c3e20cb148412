//! The CNI protocol end to end through the exec interface: the real `cnikit` binary against the
//! real `cnikit-agent`, in throwaway node, VPC and pod namespaces (the root namespace is never
//! touched). Every operation in every supported version, the error codes, 32 concurrent ADDs,
//! DEL idempotency, DEL with the agent down and with the pod's namespace gone, GC, and an agent
//! restart in the middle of a burst.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::Ipv4Addr,
    time::Duration,
};

use cnikit_examples::harness::{Binaries, CniOutcome, Echo, HttpCloud, TestNode, ask};
use cnikit_netns_setup::naming;
use cnikit_test_support::{
    netns::{Role, TestNetns},
    require_root,
};
use serde_json::{Value, json};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 253);

fn bins() -> Binaries {
    Binaries {
        plugin: env!("CARGO_BIN_EXE_cnikit").into(),
        agent: env!("CARGO_BIN_EXE_cnikit-agent").into(),
    }
    .with_plugin_from_env()
}

fn node() -> TestNode {
    let mut node = TestNode::new(bins()).unwrap();
    node.start_agent().unwrap();
    node
}

/// A node whose cloud (the HTTP simulator) outlives agent restarts.
fn restartable_node() -> (TestNode, HttpCloud) {
    let mut node = TestNode::new(bins()).unwrap();
    let mut region = cnikit_cloud_api::sim::SimConfig::default();
    region.latency.attach = Duration::from_millis(20);
    let cloud = HttpCloud::start(&node.node, region).unwrap();
    node.use_http_cloud(&cloud);
    node.start_agent().unwrap();
    (node, cloud)
}

/// A round trip from `from` to an echo server at `to:7` in `ns`.
fn reaches(from: &TestNetns, ns: &TestNetns, to: Ipv4Addr) -> bool {
    let addr = (to, 7).into();
    let _echo = Echo::start(ns, addr, "pong").unwrap();
    // No route (a pod after `DEL`) is not reaching either.
    matches!(ask(from, addr, Duration::from_secs(2)), Ok(Some(_)))
}

fn host_veths(node: &TestNode) -> usize {
    node.node
        .ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(": cnk"))
        .count()
}

/// Asserts the node has `n` pod veths once the agent's background deletions (of the pairs of
/// pods whose `DEL` answered) are done.
fn assert_host_veths(node: &TestNode, n: usize) {
    let settled = node.wait_retired(Duration::from_secs(10));
    assert!(settled, "veth deletions still running");
    assert_eq!(host_veths(node), n);
}

fn with_prev(conf: &Value, add: &CniOutcome) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = add.output.clone();
    c
}

/// `DEL` of `<prefix>-<i>` in `pods[i]`, each of which must succeed.
fn del_each(node: &TestNode, conf: &Value, prefix: &str, pods: &[TestNetns]) {
    for (i, pod) in pods.iter().enumerate() {
        let id = format!("{prefix}-{i}");
        let del = node
            .cni("DEL", conf, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(del.success, "DEL {id}: {}", del.stdout);
    }
}

fn expect_code(outcome: &CniOutcome, code: u64, what: &str) {
    assert!(!outcome.success, "{what}: succeeded: {}", outcome.stdout);
    assert_eq!(outcome.code(), Some(code), "{what}: {}", outcome.stdout);
    assert!(
        outcome.output["msg"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        outcome.stdout
    );
}

#[test]
fn every_operation_in_every_version() {
    require_root!("every_operation_in_every_version");
    let node = node();
    // This kernel has no ipvlan: `auto` (the agent's ipvlan choice) and `ipvlan` fall back to
    // veth, found by probing.
    let modes = ["auto", "ipvlan", "veth"];
    for (i, version) in ["0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let mut conf = node.netconf(version);
        conf["mode"] = json!(modes[i]);
        let v = node.cni("VERSION", &conf, "", None, "", "").unwrap();
        assert!(v.success, "{}", v.stdout);
        assert_eq!(v.output["cniVersion"], json!(version));
        let supported = v.output["supportedVersions"].as_array().unwrap();
        for s in ["0.4.0", "1.0.0", "1.1.0"] {
            assert!(supported.contains(&json!(s)), "{}", v.stdout);
        }

        let pod = TestNetns::create(Role::Pod).unwrap();
        let id = format!("c-{i}");
        let add = node
            .add(&conf, &id, &pod, "prod", &format!("web-{i}"))
            .unwrap();
        assert!(add.success, "{version} ADD: {} {}", add.stdout, add.stderr);
        assert_eq!(add.output["cniVersion"], json!(version));
        let ip = add.ip().unwrap();
        assert_eq!(&ip.octets()[..2], &[198, 18], "{ip}");
        assert_eq!(add.output["dns"]["nameservers"], json!(["169.254.20.10"]));
        let host = add.output["interfaces"][0]["name"].as_str().unwrap();
        assert!(
            host.starts_with("cnk"),
            "{} wired with veth: {}",
            modes[i],
            add.stdout
        );
        // The pod reaches the VPC through its ENI, and back.
        assert!(reaches(&pod, &node.vpc, GATEWAY), "{version}: pod -> VPC");
        // A retried ADD gets the same address.
        let again = node
            .add(&conf, &id, &pod, "prod", &format!("web-{i}"))
            .unwrap();
        assert!(again.success, "{}", again.stdout);
        assert_eq!(again.ip(), Some(ip));

        let conf_prev = with_prev(&conf, &add);
        let check = node
            .cni("CHECK", &conf_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(check.success, "{version} CHECK: {}", check.stdout);
        // Drift: the pod's default route removed; CHECK reports it.
        pod.ip(&["route", "del", "default"]).unwrap();
        let drift = node
            .cni("CHECK", &conf_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        expect_code(&drift, 100, "CHECK after drift");

        let del = node
            .cni("DEL", &conf_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(del.success, "{version} DEL: {}", del.stdout);
        assert_eq!(del.stdout.trim(), "");
        // Unwired when DEL answers (the pair itself may still be being deleted): no `eth0`
        // in the pod, no rule naming its address on the node, and the pod cannot reach the
        // VPC.
        let links = pod.ip(&["-o", "link", "show"]).unwrap();
        assert!(!links.contains(": eth0"), "{version}: {links}");
        let rules = node.node.ip(&["rule", "show"]).unwrap();
        assert!(!rules.contains(&ip.to_string()), "{version}: {rules}");
        assert!(
            !reaches(&pod, &node.vpc, GATEWAY),
            "{version}: pod -> VPC after DEL"
        );
        let again = node
            .cni("DEL", &conf_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        assert!(again.success, "{version} second DEL: {}", again.stdout);
        let check = node
            .cni("CHECK", &conf_prev, &id, Some(pod.path()), "eth0", "")
            .unwrap();
        expect_code(&check, 3, "CHECK after DEL");
    }
    assert_host_veths(&node, 0);
    // The ENI's interface keeps the qdisc that holds the kernel's tc hooks after its last pod.
    let out = node
        .node
        .command("tc")
        .unwrap()
        .args(["qdisc", "show"])
        .output()
        .unwrap();
    let qdiscs = String::from_utf8_lossy(&out.stdout);
    assert!(
        qdiscs
            .lines()
            .any(|l| l.contains("clsact") && (l.contains("dev eth") || l.contains("dev eni"))),
        "{qdiscs}"
    );

    // STATUS and GC exist from 1.1.0 on.
    let status = node
        .cni("STATUS", &node.netconf("1.1.0"), "", None, "", "")
        .unwrap();
    assert!(status.success, "{}", status.stdout);
    let old = node
        .cni("STATUS", &node.netconf("1.0.0"), "", None, "", "")
        .unwrap();
    expect_code(&old, 1, "STATUS in 1.0.0");
    let mut gc = node.netconf("1.0.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    expect_code(
        &node.cni("GC", &gc, "", None, "", "").unwrap(),
        1,
        "GC in 1.0.0",
    );
}

#[test]
fn errors_carry_the_reserved_codes() {
    require_root!("errors_carry_the_reserved_codes");
    let mut node = node();
    let pod = TestNetns::create(Role::Pod).unwrap();
    let conf = node.netconf("1.1.0");
    let add = |c: &Value| node.add(c, "err-1", &pod, "prod", "x").unwrap();

    let mut raw = node
        .node
        .command(&node.bins.plugin.to_string_lossy())
        .unwrap();
    raw.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "err-1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", pod.path())
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let garbage = cnikit_examples::harness::run_with_stdin(raw, b"{not json").unwrap();
    expect_code(&garbage, 6, "malformed JSON");

    let mut c = conf.clone();
    c["cniVersion"] = json!("9.9.9");
    expect_code(&add(&c), 1, "unknown version");
    let mut c = conf.clone();
    c["ipam"] = json!({"type": "host-local"});
    expect_code(&add(&c), 2, "ipam");
    let mut c = conf.clone();
    c["mtu"] = json!(1);
    let bad_mtu = add(&c);
    expect_code(&bad_mtu, 7, "mtu");
    assert!(bad_mtu.stdout.contains("mtu"), "{}", bad_mtu.stdout);
    let mut c = conf.clone();
    c["mode"] = json!("bridge");
    let bad_mode = add(&c);
    expect_code(&bad_mode, 7, "mode");
    assert!(
        bad_mode.stdout.contains("mode") || bad_mode.stdout.contains("bridge"),
        "{}",
        bad_mode.stdout
    );

    let missing = node
        .cni("ADD", &conf, "", Some(pod.path()), "eth0", "")
        .unwrap();
    expect_code(&missing, 4, "no CNI_CONTAINERID");
    let bad_ifname = node
        .cni(
            "ADD",
            &conf,
            "err-1",
            Some(pod.path()),
            "an-interface-name-too-long",
            "",
        )
        .unwrap();
    expect_code(&bad_ifname, 4, "interface name");
    let no_ns = node
        .cni(
            "ADD",
            &conf,
            "err-1",
            Some(std::path::Path::new("/run/netns/cnikit-none")),
            "eth0",
            "",
        )
        .unwrap();
    expect_code(&no_ns, 8, "missing namespace");
    expect_code(
        &node
            .cni("CHECK", &conf, "err-1", Some(pod.path()), "eth0", "")
            .unwrap(),
        7,
        "CHECK without prevResult",
    );
    expect_code(
        &node.cni("GC", &conf, "", None, "", "").unwrap(),
        7,
        "GC without the list of valid attachments",
    );
    // Nothing above allocated anything.
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    assert_eq!(stats.pool.in_use, 0);
    assert_host_veths(&node, 0);

    // The socket: only root may talk; another protocol version is refused, garbage too.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(node.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for (request, kind) in [
        (r#"{"version":2,"id":5,"request":"status"}"#, "version"),
        (
            r#"{"version":1,"id":6,"request":"launch_missiles"}"#,
            "invalid_request",
        ),
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(node.socket()).unwrap();
        writeln!(s, "{request}").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["error"]["kind"], json!(kind), "{reply}");
        assert_eq!(reply["version"], json!(1));
    }

    // The agent gone: ADD is "try again later", STATUS "not ready".
    node.stop_agent().unwrap();
    let down = node.add(&conf, "err-1", &pod, "prod", "x").unwrap();
    expect_code(&down, 11, "ADD without the agent");
    expect_code(
        &node.cni("STATUS", &conf, "", None, "", "").unwrap(),
        50,
        "STATUS without the agent",
    );
    assert_host_veths(&node, 0);
}

#[test]
fn thirty_two_concurrent_adds_then_gc() {
    require_root!("thirty_two_concurrent_adds_then_gc");
    let node = node();
    let conf = node.netconf("1.1.0");
    let pods: Vec<TestNetns> = (0..32)
        .map(|_| TestNetns::create(Role::Pod).unwrap())
        .collect();
    let results: Vec<CniOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let node = &node;
                let conf = &conf;
                s.spawn(move || {
                    node.add(conf, &format!("burst-{i}"), pod, "burst", &format!("p{i}"))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = BTreeSet::new();
    for (i, r) in results.iter().enumerate() {
        assert!(r.success, "ADD {i}: {} {}", r.stdout, r.stderr);
        assert!(
            ips.insert(r.ip().unwrap()),
            "duplicate address {:?}",
            r.ip()
        );
    }
    assert_host_veths(&node, 32);
    // Pod to pod on the node.
    assert!(reaches(&pods[0], &pods[31], results[31].ip().unwrap()));

    // Metrics on the node's loopback count the ADDs.
    let metrics = node.node.run(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 9464)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    });
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("cnikit_cni_add_duration_seconds_count 32"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cnikit_pool_in_use{kind=\"shared_ip\"} 32"),
        "{metrics}"
    );

    // GC keeps the first half.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!(
        (0..16)
            .map(|i| json!({"containerID": format!("burst-{i}"), "ifname": "eth0"}))
            .collect::<Vec<_>>()
    );
    let out = node.cni("GC", &gc, "", None, "", "").unwrap();
    assert!(out.success, "GC: {} {}", out.stdout, out.stderr);
    assert_host_veths(&node, 16);
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    assert_eq!(stats.pool.in_use, 16);
    assert_eq!(stats.endpoints, 16);
    // The kept ones still check out; a collected one is unknown.
    let check = node
        .cni(
            "CHECK",
            &with_prev(&conf, &results[0]),
            "burst-0",
            Some(pods[0].path()),
            "eth0",
            "",
        )
        .unwrap();
    assert!(check.success, "{}", check.stdout);
    let gone = node
        .cni(
            "CHECK",
            &with_prev(&conf, &results[20]),
            "burst-20",
            Some(pods[20].path()),
            "eth0",
            "",
        )
        .unwrap();
    expect_code(&gone, 3, "CHECK of a collected attachment");
    for (i, (pod, r)) in pods.iter().zip(&results).enumerate() {
        let del = node
            .cni(
                "DEL",
                &with_prev(&conf, r),
                &format!("burst-{i}"),
                Some(pod.path()),
                "eth0",
                "",
            )
            .unwrap();
        assert!(del.success, "DEL {i}: {}", del.stdout);
    }
    assert_host_veths(&node, 0);
}

#[test]
fn del_without_the_agent_or_the_namespace() {
    require_root!("del_without_the_agent_or_the_namespace");
    let (mut node, _cloud) = restartable_node();
    let conf = node.netconf("1.0.0");
    let a = TestNetns::create(Role::Pod).unwrap();
    let b = TestNetns::create(Role::Pod).unwrap();
    let add_a = node.add(&conf, "gone-a", &a, "prod", "a").unwrap();
    let add_b = node.add(&conf, "gone-b", &b, "prod", "b").unwrap();
    assert!(
        add_a.success && add_b.success,
        "{} {}",
        add_a.stdout,
        add_b.stdout
    );

    // The agent is down: DEL still succeeds, from prevResult.
    node.kill_agent();
    let del = node
        .cni(
            "DEL",
            &with_prev(&conf, &add_a),
            "gone-a",
            Some(a.path()),
            "eth0",
            "",
        )
        .unwrap();
    assert!(
        del.success,
        "DEL without the agent: {} {}",
        del.stdout, del.stderr
    );
    assert_host_veths(&node, 1);

    // Back up: the queued release is done before anything else.
    node.start_agent().unwrap();
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    assert_eq!(stats.pool.in_use, 1, "a's address went back, b's is kept");
    assert_eq!(stats.endpoints, 1);

    // b's namespace is gone before its DEL.
    drop(b);
    let del = node
        .cni("DEL", &with_prev(&conf, &add_b), "gone-b", None, "eth0", "")
        .unwrap();
    assert!(del.success, "DEL without the namespace: {}", del.stdout);
    assert_host_veths(&node, 0);
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    assert_eq!(stats.pool.in_use, 0);
    assert_eq!(stats.endpoints, 0);
}

#[test]
fn agent_restart_in_the_middle_of_a_burst() {
    require_root!("agent_restart_in_the_middle_of_a_burst");
    let (mut node, cloud) = restartable_node();
    let conf = node.netconf("1.1.0");
    let pods: Vec<TestNetns> = (0..16)
        .map(|_| TestNetns::create(Role::Pod).unwrap())
        .collect();
    let add = |node: &TestNode, i: usize| {
        node.add(
            &conf,
            &format!("r-{i}"),
            &pods[i],
            "burst",
            &format!("p{i}"),
        )
        .unwrap()
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let first: Vec<CniOutcome> = std::thread::scope(|s| {
        let node_ref = &node;
        let done = &done;
        let handles: Vec<_> = (0..16)
            .map(|i| {
                s.spawn(move || {
                    // Staggered, as pods arrive.
                    std::thread::sleep(Duration::from_millis(25 * i as u64));
                    let r = add(node_ref, i);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    r
                })
            })
            .collect();
        // Crash the agent once a few pods are up and the rest are still arriving.
        assert!(cnikit_test_support::process::wait_until(
            Duration::from_secs(20),
            || { done.load(std::sync::atomic::Ordering::SeqCst) >= 5 }
        ));
        node_ref.signal_agent(nix::sys::signal::Signal::SIGKILL);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served_before = first.iter().filter(|r| r.success).count();
    node.kill_agent();
    node.start_agent().unwrap();
    // The runtime retries what failed; every pod ends with the address it had, no duplicates.
    let mut ips = BTreeSet::new();
    for (i, r) in first.iter().enumerate() {
        let retried = add(&node, i);
        assert!(retried.success, "retried ADD {i}: {}", retried.stdout);
        if r.success {
            assert_eq!(
                retried.ip(),
                r.ip(),
                "pod {i} kept its address across the restart"
            );
        }
        assert!(ips.insert(retried.ip().unwrap()));
    }
    eprintln!("{served_before} of 16 ADDs were served before the crash");
    assert!(served_before >= 5);
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    assert_eq!(stats.pool.in_use, 16);
    assert_eq!(stats.endpoints, 16);
    assert!(
        reaches(&pods[3], &node.vpc, GATEWAY),
        "wiring survived the restart"
    );
    let calls_before = cloud.cloud.total_calls();
    del_each(&node, &conf, "r", &pods);
    assert_host_veths(&node, 0);
    assert!(cloud.cloud.total_calls() >= calls_before);
}

#[test]
fn exclusive_eni_mode() {
    require_root!("exclusive_eni_mode");
    let node = node();
    let mut conf = node.netconf("1.1.0");
    conf["mode"] = json!("exclusive");
    let pod = TestNetns::create(Role::Pod).unwrap();
    let add = node.add(&conf, "excl-1", &pod, "prod", "db").unwrap();
    assert!(add.success, "{} {}", add.stdout, add.stderr);
    // The ENI itself is the pod's eth0 now.
    let links = pod.ip(&["-o", "link", "show", "eth0"]).unwrap();
    assert!(links.contains("eth0"), "{links}");
    assert!(reaches(&pod, &node.vpc, GATEWAY), "exclusive pod -> VPC");
    let check = node
        .cni(
            "CHECK",
            &with_prev(&conf, &add),
            "excl-1",
            Some(pod.path()),
            "eth0",
            "",
        )
        .unwrap();
    assert!(check.success, "{}", check.stdout);
    let del = node
        .cni(
            "DEL",
            &with_prev(&conf, &add),
            "excl-1",
            Some(pod.path()),
            "eth0",
            "",
        )
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    // The ENI is back on the node, out of the pod.
    assert!(pod.ip(&["-o", "link", "show", "eth0"]).is_err());
}

#[test]
fn a_late_del_never_unwires_the_next_holder_of_an_address() {
    require_root!("a_late_del_never_unwires_the_next_holder_of_an_address");
    let node = node();
    let conf = node.netconf("1.1.0");
    let a = TestNetns::create(Role::Pod).unwrap();
    let add_a = node.add(&conf, "late-a", &a, "prod", "a").unwrap();
    assert!(add_a.success, "{}", add_a.stdout);
    let x = add_a.ip().unwrap();
    let a_prev = with_prev(&conf, &add_a);
    assert!(
        node.cni("DEL", &a_prev, "late-a", Some(a.path()), "eth0", "")
            .unwrap()
            .success
    );
    // After the cool-down (1 s here) the address goes to another pod.
    std::thread::sleep(Duration::from_millis(1200));
    let mut holder = None;
    let mut pods = Vec::new();
    for i in 0..40 {
        let pod = TestNetns::create(Role::Pod).unwrap();
        let add = node
            .add(&conf, &format!("late-b{i}"), &pod, "prod", &format!("b{i}"))
            .unwrap();
        assert!(add.success, "{}", add.stdout);
        let found = add.ip() == Some(x);
        pods.push((pod, add, format!("late-b{i}")));
        if found {
            holder = Some(pods.len() - 1);
            break;
        }
    }
    let (b, add_b, id_b) = &pods[holder.expect("the address was handed out again")];
    // The runtime repeats A's DEL (with A's prevResult naming the same address).
    let late = node
        .cni("DEL", &a_prev, "late-a", Some(a.path()), "eth0", "")
        .unwrap();
    assert!(late.success, "{}", late.stdout);
    let check = node
        .cni(
            "CHECK",
            &with_prev(&conf, add_b),
            id_b,
            Some(b.path()),
            "eth0",
            "",
        )
        .unwrap();
    assert!(
        check.success,
        "the new holder's wiring is intact: {}",
        check.stdout
    );
    assert!(reaches(b, &node.vpc, GATEWAY));
}

/// `"wiring": "plugin"` (the plugin wires between `allocate` and `wired`) and the default
/// (the agent wires in one `add` / `delete` call) give the same pod and undo each other's
/// work: an `ADD` of one mode is checked and deleted by the other, leaving no veth, no
/// dataplane attachment and no address behind.
#[test]
fn both_wiring_modes_serve_and_undo_each_other() {
    require_root!("both_wiring_modes_serve_and_undo_each_other");
    let node = node();
    let stats = || {
        node.node
            .run_async(|| async { node.stats().await.unwrap() })
    };
    let before = stats();
    let combos = [
        ("plugin", "plugin"),
        ("agent", "plugin"),
        ("plugin", "agent"),
        ("agent", "agent"),
    ];
    for (i, (add_mode, del_mode)) in combos.into_iter().enumerate() {
        let what = format!("ADD by {add_mode}, DEL by {del_mode}");
        let mut add_conf = node.netconf("1.1.0");
        add_conf["wiring"] = json!(add_mode);
        let mut del_conf = node.netconf("1.1.0");
        del_conf["wiring"] = json!(del_mode);
        let pod = TestNetns::create(Role::Pod).unwrap();
        let id = format!("wiring-{i}");
        let add = node.add(&add_conf, &id, &pod, "prod", &id).unwrap();
        assert!(add.success, "{what}: {} {}", add.stdout, add.stderr);
        assert!(reaches(&pod, &node.vpc, GATEWAY), "{what}: pod -> VPC");
        let wired = stats();
        assert_eq!(wired.pool.in_use, before.pool.in_use + 1, "{what}");
        assert_eq!(wired.endpoints, before.endpoints + 1, "{what}");
        assert_eq!(
            wired.attachments,
            before.attachments + 2,
            "{what}: both programs on the pod's veth"
        );
        let with_add = with_prev(&del_conf, &add);
        let run = |command: &str| {
            node.cni(command, &with_add, &id, Some(pod.path()), "eth0", "")
                .unwrap()
        };
        let check = run("CHECK");
        assert!(check.success, "{what}: CHECK {}", check.stdout);
        let del = run("DEL");
        assert!(del.success, "{what}: DEL {} {}", del.stdout, del.stderr);
        assert_host_veths(&node, 0);
        let after = stats();
        assert_eq!(after.pool.in_use, before.pool.in_use, "{what}");
        assert_eq!(after.endpoints, before.endpoints, "{what}");
        assert_eq!(after.attachments, before.attachments, "{what}");
        let again = run("DEL");
        assert!(again.success, "{what}: second DEL {}", again.stdout);
    }
    let mut bad = node.netconf("1.1.0");
    bad["wiring"] = json!("kernel");
    let pod = TestNetns::create(Role::Pod).unwrap();
    expect_code(
        &node.add(&bad, "bad-wiring", &pod, "prod", "x").unwrap(),
        7,
        "an unknown wiring",
    );
}

/// An `ADD` that fails after the agent started wiring (no address left before the deadline)
/// leaves no veth and no eBPF attachment behind; an `ADD` for an attachment another pod holds
/// is refused and leaves that pod wired and working.
#[test]
fn failed_adds_leave_the_node_as_it_was() {
    require_root!("failed_adds_leave_the_node_as_it_was");
    let mut node = TestNode::new(bins()).unwrap();
    // A small instance: 12 shared addresses.
    node.agent_config["cloud"] = json!({ "provider": "simulator", "region": { "instances": [{
        "id": "i-sim0000000000000001", "instance_type": "ecs.g7.large",
        "vswitch_id": "vsw-sim0000000000000001", "security_group_ids": ["sg-sim0000000000000001"] }] } });
    node.agent_config["pool"]["shared"] = json!({ "min_idle": 2, "max_idle": 8, "warm_up": 4 });
    node.start_agent().unwrap();
    let stats = || {
        node.node
            .run_async(|| async { node.stats().await.unwrap() })
    };
    let capacity = usize::try_from(stats().pool.capacity).unwrap();
    assert!((1..=20).contains(&capacity), "{capacity}");
    let mut conf = node.netconf("1.1.0");
    conf["timeoutSeconds"] = json!(1);
    let pods: Vec<_> = (0..=capacity)
        .map(|_| TestNetns::create(Role::Pod).unwrap())
        .collect();
    for (i, pod) in pods[..capacity].iter().enumerate() {
        let add = node
            .add(&conf, &format!("full-{i}"), pod, "prod", &format!("p{i}"))
            .unwrap();
        assert!(add.success, "ADD {i}: {} {}", add.stdout, add.stderr);
    }
    let full = stats();
    assert_eq!(full.attachments, 2 * capacity);
    let refused = node
        .add(&conf, "one-too-many", &pods[capacity], "prod", "extra")
        .unwrap();
    expect_code(&refused, 11, "ADD with no address left");
    assert_eq!(host_veths(&node), capacity, "the extra pod's veth is gone");
    assert!(
        pods[capacity]
            .ip(&["-o", "link", "show"])
            .unwrap()
            .lines()
            .count()
            == 1,
        "only lo is left in the extra pod"
    );
    let after = stats();
    assert_eq!(after.attachments, full.attachments);
    assert_eq!(after.pool.in_use, full.pool.in_use);

    // The same attachment for another pod: refused, the holder untouched.
    let taken = node
        .add(&conf, "full-0", &pods[capacity], "prod", "impostor")
        .unwrap();
    assert!(!taken.success, "{}", taken.stdout);
    assert_eq!(host_veths(&node), capacity);
    assert_eq!(stats().attachments, full.attachments);
    assert!(
        reaches(&pods[0], &node.vpc, GATEWAY),
        "the holder still works"
    );

    del_each(&node, &conf, "full", &pods[..capacity]);
    assert_host_veths(&node, 0);
    assert_eq!(stats().attachments, 0);
}

/// A pair an agent retired but did not delete (it was killed between a `DEL`'s answer and the
/// deletion, and the pod's namespace stayed) is deleted by the next agent; pairs of recorded
/// pods are not.
#[test]
fn a_restarted_agent_deletes_pairs_left_retired() {
    require_root!("a_restarted_agent_deletes_pairs_left_retired");
    let mut node = node();
    let conf = node.netconf("1.1.0");
    let kept = TestNetns::create(Role::Pod).unwrap();
    let add = node.add(&conf, "kept", &kept, "prod", "kept").unwrap();
    assert!(add.success, "{}", add.stdout);
    let left = TestNetns::create(Role::Pod).unwrap();
    let host = naming::host_veth_name("left-behind", "eth0");
    let tombstone = naming::retired_name("left-behind", "eth0");
    node.node
        .ip(&[
            "link",
            "add",
            &host,
            "type",
            "veth",
            "peer",
            "name",
            &tombstone,
            "netns",
            left.name(),
        ])
        .unwrap();
    assert_host_veths(&node, 2);

    node.stop_agent().unwrap();
    node.start_agent().unwrap();
    assert_host_veths(&node, 1);
    let links = left.ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains(&tombstone), "{links}");
    assert!(
        reaches(&kept, &node.vpc, GATEWAY),
        "the recorded pod is intact"
    );
}
