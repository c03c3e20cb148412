//! The agent on AWS EC2: the real `cnikit-agent` with `cloud.provider = "aws"` against
//! `moto_server` (one per test binary, on the loopback of the namespace the test runs in, reached
//! from the node namespace through a [`TcpRelay`]), and the real `cnikit` plugin wiring veth pods
//! on EC2-allocated ENIs (played by veths into the VPC namespace, found by MAC). Under `CI=true`
//! a missing moto or root fails; elsewhere the test prints SKIP.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{collections::BTreeSet, io::Read, io::Write, net::Ipv4Addr, time::Duration};

use cnikit_cloud_api::{
    CloudProvider, Eni, EniFilter,
    ec2::{
        Ec2Client,
        testbed::{self, Testbed},
    },
};
use cnikit_eni_pool::tags;
use cnikit_examples::harness::{Binaries, Echo, TcpRelay, TestNode, ask};
use cnikit_test_support::{
    moto::MotoServer,
    netns::{Role, TestNetns},
    require_root,
};
use serde_json::json;

/// moto's `m5.large`: 3 ENIs of 10 IPv4 addresses each.
const TYPE: &str = "m5.large";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The pool's ENIs on `instance` as EC2 sees them.
fn pool_enis(rt: &tokio::runtime::Runtime, ec2: &Ec2Client, instance: &str) -> Vec<Eni> {
    let mut f = EniFilter::tag(tags::POOL, "cnikit");
    f.tags.insert(tags::INSTANCE.into(), instance.to_owned());
    rt.block_on(ec2.describe_enis(&f)).unwrap()
}

fn metrics(node: &TestNode) -> String {
    node.node.run(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 9464)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn agent_runs_on_ec2_through_moto() {
    require_root!("agent_runs_on_ec2_through_moto");
    let Some(moto) = MotoServer::shared_for("agent_runs_on_ec2_through_moto") else {
        return;
    };
    let rt = runtime();
    let ec2 = testbed::client_for(&moto.url()).unwrap();
    // A VPC 198.18.0.0/16 with one subnet over all of it and a running m5.large.
    let world = rt.block_on(Testbed::create(&ec2, TYPE, 1)).unwrap();

    let mut node = TestNode::new(
        Binaries {
            plugin: env!("CARGO_BIN_EXE_cnikit").into(),
            agent: env!("CARGO_BIN_EXE_cnikit-agent").into(),
        }
        .with_plugin_from_env(),
    )
    .unwrap();
    let relay = TcpRelay::start(&node.node, moto.addr()).unwrap();
    // moto's own metadata service reports an instance its EC2 does not have: the identity is
    // configured, and nothing is left for IMDSv2 (an unreachable endpoint proves it).
    node.agent_config["cloud"] = json!({
        "provider": "aws",
        "endpoint": relay.url(),
        "region": "us-east-1",
        "instance_id": world.instance_id,
        "instance_type": TYPE,
        "imds_endpoint": "http://127.0.0.1:9/",
        "credentials": { "source": "static", "access_key_id": "testing", "secret_access_key": "testing" },
    });
    node.agent_config["pool"]["security_groups"] = json!([world.security_group_id]);
    node.agent_config["pool"]["vswitches"] = json!([world.subnet_id]);
    node.agent_config["pool"]["shared"] = json!({ "min_idle": 2, "max_idle": 6, "warm_up": 4 });
    node.agent_config["node"]["datapath"] = json!("veth");
    node.agent_config["node"]["node_ips"] = json!([]);
    node.start_agent().unwrap();

    // Three pods through the real plugin.
    let conf = node.netconf("1.0.0");
    let pods: Vec<TestNetns> = (0..3)
        .map(|_| TestNetns::create(Role::Pod).unwrap())
        .collect();
    let mut ips = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let out = node
            .add(
                &conf,
                &format!("aws{i}"),
                pod,
                "default",
                &format!("web-{i}"),
            )
            .unwrap();
        assert!(
            out.success,
            "ADD {i}: {} {}\n{}",
            out.stdout,
            out.stderr,
            node.agent_output()
        );
        let ip = out.ip().unwrap();
        assert!(
            ipnetwork::Ipv4Network::new(Ipv4Addr::new(198, 18, 0, 0), 15)
                .unwrap()
                .contains(ip),
            "{ip}"
        );
        ips.push(ip);
    }
    assert_eq!(ips.iter().collect::<BTreeSet<_>>().len(), 3, "{ips:?}");

    // Each address is a secondary address of one of the pool's ENIs in EC2, never an ENI's
    // primary (the AWS rule the agent applies on its own), on an ENI attached to the instance.
    let enis = pool_enis(&rt, &ec2, &world.instance_id);
    assert!(!enis.is_empty());
    for ip in &ips {
        let eni = enis
            .iter()
            .find(|e| e.secondary_ipv4.contains(ip))
            .unwrap_or_else(|| panic!("{ip} is on no pool ENI in EC2: {enis:#?}"));
        assert_ne!(
            eni.primary_ipv4,
            Some(*ip),
            "an ENI's primary address handed out"
        );
        assert_eq!(
            eni.instance_id(),
            Some(world.instance_id.as_str()),
            "{eni:?}"
        );
        // The ENI became a link on the node with its EC2 MAC.
        let links = node.node.ip(&["-o", "link", "show"]).unwrap();
        assert!(
            links.contains(&eni.mac),
            "{} not on the node:\n{links}",
            eni.mac
        );
    }

    // Pod-to-pod traffic, both ways.
    for (a, b) in [(0, 1), (2, 0)] {
        let addr = (ips[b], 7).into();
        let _echo = Echo::start(&pods[b], addr, "pong").unwrap();
        let got = ask(&pods[a], addr, Duration::from_secs(2)).unwrap();
        let (reply, from) =
            got.unwrap_or_else(|| panic!("pod {a} -> pod {b} ({}): no answer", ips[b]));
        assert_eq!(reply, "pong");
        assert_eq!(from, addr, "the answer came from elsewhere");
    }

    // The agent counted its EC2 calls.
    let m = metrics(&node);
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    for action in ["create_eni", "attach_eni"] {
        let series = format!("cnikit_cloud_calls_total{{action=\"{action}\",outcome=\"ok\"}}");
        assert!(counter(&m, &series) >= 1, "no {series}:\n{m}");
    }

    // DEL releases every address back to the pool.
    let in_use = rt.block_on(node.stats()).unwrap().pool.in_use;
    assert_eq!(in_use, 3);
    for (i, pod) in pods.iter().enumerate() {
        let out = node
            .cni(
                "DEL",
                &conf,
                &format!("aws{i}"),
                Some(pod.path()),
                "eth0",
                "",
            )
            .unwrap();
        assert!(out.success, "DEL {i}: {} {}", out.stdout, out.stderr);
    }
    let stats = rt.block_on(node.stats()).unwrap();
    assert_eq!((stats.endpoints, stats.pool.in_use), (0, 0), "{stats:?}");
    assert!(stats.pool.failures == 0, "{stats:?}");
    drop(relay);
}
