//! `cnikit-demo`: one node, end to end, in under 30 s, as root, with no cloud account.
//!
//! It starts `cnikit-agent` on the embedded ECS simulator inside a throwaway "node" namespace
//! (a "vpc" namespace plays the cloud's router), creates pods (namespaces) through the real
//! `cnikit` plugin binary over the CNI protocol, and shows pod-to-pod and pod-to-VPC traffic, a
//! ClusterIP Service load-balanced by the eBPF dataplane, a NetworkPolicy denying then allowing,
//! DNS AutoPath answers from the node-local server, the pool's state and how many cloud calls
//! it all took; then it deletes the pods over CNI and removes every namespace. Nothing outside
//! the namespaces it creates is touched.
//!
//! `cnikit-demo --probe` runs the earlier, smaller demo of the eBPF probe.

mod probe;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use cnikit_examples::{
    harness::{Binaries, CniOutcome, Echo, TestNode, ask},
    protocol::{Reply, Request},
};
use cnikit_test_support::{
    netns::{Role, TestNetns},
    privilege::is_root,
};
use serde_json::{Value, json};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 253);
const DNS: &str = "169.254.20.10";
const WAIT: Duration = Duration::from_millis(700);

fn main() -> ExitCode {
    if !is_root() {
        eprintln!("cnikit-demo must run as root (it creates network namespaces and loads eBPF)");
        return ExitCode::from(2);
    }
    let probe = std::env::args().any(|a| a == "--probe");
    let started = Instant::now();
    let outcome = if probe { probe::run() } else { run() };
    match outcome {
        Ok(()) => {
            println!(
                "DEMO RESULT: PASS ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("DEMO RESULT: FAIL: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Pod {
    namespace: &'static str,
    name: &'static str,
    netns: TestNetns,
    add: CniOutcome,
}

impl Pod {
    fn ip(&self) -> Ipv4Addr {
        self.add.ip().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
    fn id(&self) -> String {
        format!("demo-{}-{}", self.namespace, self.name)
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

fn catalog(policy: &Value) -> Value {
    json!({
        "services": [{
            "namespace": "shop", "name": "web", "cluster_ip": VIP,
            "ports": [{ "name": "echo", "protocol": "UDP", "port": 80, "target_port": 8080 }],
            "backends": [{ "pod": "shop/web-0" }, { "pod": "shop/web-1" }, { "pod": "shop/web-2" }]
        }],
        "policies": policy,
    })
}

fn reload(node: &TestNode, catalog: &Value) -> Result<()> {
    std::fs::write(node.catalog_path(), serde_json::to_vec_pretty(catalog)?)?;
    let reply = node.node.run_async(|| async {
        node.client()
            .call(Request::Reload, Duration::from_secs(10))
            .await
    })?;
    match reply {
        Reply::Reloaded(r) if r.unresolved.is_empty() => Ok(()),
        other => bail!("unexpected reload reply {other:?}"),
    }
}

fn run() -> Result<()> {
    println!(
        "cnikit demo: one node, its pods, Services, policies and DNS, all in throwaway namespaces"
    );
    let bins = Binaries::beside_current_exe()?;
    for b in [&bins.plugin, &bins.agent] {
        ensure!(
            b.exists(),
            "{} is missing: build the workspace's binaries first (`cargo build --release -p cnikit-examples`)",
            b.display()
        );
    }
    let mut node = TestNode::new(bins).context("creating the node and VPC namespaces")?;
    std::fs::write(
        node.catalog_path(),
        serde_json::to_vec(&catalog(&json!([])))?,
    )?;

    step("node agent");
    let t = Instant::now();
    node.start_agent().context("starting cnikit-agent")?;
    let stats = node.node.run_async(|| async { node.stats().await })?;
    println!(
        "cnikit-agent on the embedded ECS simulator, in namespace {} ({} ms); warm pool: {} idle addresses on {} ENI(s)",
        node.node.name(),
        t.elapsed().as_millis(),
        stats.pool.idle,
        stats.pool.enis_ready
    );

    step("pods, created by the `cnikit` plugin over CNI (ADD, cniVersion 1.1.0)");
    let conf = node.netconf("1.1.0");
    let specs = [
        ("shop", "web-0"),
        ("shop", "web-1"),
        ("shop", "web-2"),
        ("prod", "client"),
        ("prod", "intruder"),
    ];
    println!(
        "{:<16} {:<14} {:<16} {:>8}",
        "pod", "address", "host veth", "ADD ms"
    );
    let mut pods = Vec::new();
    for (namespace, name) in specs {
        let netns = TestNetns::create(Role::Pod)?;
        let id = format!("demo-{namespace}-{name}");
        let add = node.add(&conf, &id, &netns, namespace, name)?;
        ensure!(
            add.success,
            "ADD {namespace}/{name}: {} {}",
            add.stdout,
            add.stderr
        );
        let host = add.output["interfaces"][0]["name"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        let pod = Pod {
            namespace,
            name,
            netns,
            add,
        };
        println!(
            "{:<16} {:<14} {:<16} {:>8.1}",
            format!("{namespace}/{name}"),
            pod.ip(),
            host,
            pod.add.elapsed.as_secs_f64() * 1e3
        );
        pods.push(pod);
    }
    let [web0, web1, web2, client, intruder] = &pods[..] else {
        bail!("five pods expected");
    };
    let _servers = [web0, web1, web2]
        .iter()
        .map(|p| Echo::start(&p.netns, SocketAddr::from((p.ip(), 8080)), p.name))
        .collect::<std::io::Result<Vec<_>>>()?;

    step("connectivity (UDP round trips)");
    let direct = ask(&client.netns, (web0.ip(), 8080).into(), WAIT)?.is_some();
    println!(
        "prod/client -> shop/web-0 ({}:8080)   pod to pod      {}",
        web0.ip(),
        mark(direct)
    );
    let vpc_echo = Echo::start(&node.vpc, (GATEWAY, 7).into(), "vpc")?;
    let vpc = ask(&client.netns, (GATEWAY, 7).into(), WAIT)?.is_some();
    drop(vpc_echo);
    println!(
        "prod/client -> VPC ({GATEWAY}:7)      through its ENI {}",
        mark(vpc)
    );
    ensure!(direct && vpc, "connectivity failed");

    step(&format!(
        "ClusterIP Service shop/web {VIP}:80/UDP -> 3 pods :8080 (eBPF, Maglev)"
    ));
    let mut hits = std::collections::BTreeMap::<String, usize>::new();
    let mut from_vip = true;
    for _ in 0..30 {
        if let Some((who, from)) = ask(&client.netns, (VIP, 80).into(), WAIT)? {
            from_vip &= from == SocketAddr::from((VIP, 80));
            *hits.entry(who).or_default() += 1;
        }
    }
    for (who, n) in &hits {
        println!("  {who:<8} {n:>2} of 30 {}", "#".repeat(*n));
    }
    println!("  every reply came from the VIP: {}", mark(from_vip));
    ensure!(
        hits.len() == 3 && hits.values().sum::<usize>() == 30 && from_vip,
        "load balancing failed: {hits:?}"
    );

    step("NetworkPolicy on shop/web-0");
    let verdict = |ok: bool| if ok { "passes" } else { "denied" };
    let mut verdicts = Vec::new();
    for (label, ingress) in [
        ("deny all ingress:             ", json!([])),
        (
            "allow prod/client on 8080/UDP:",
            json!([{ "peers": [{ "pod": "prod/client" }], "ports": [{ "protocol": "UDP", "port": 8080 }] }]),
        ),
    ] {
        reload(
            &node,
            &catalog(&json!([{ "pod": "shop/web-0", "ingress": ingress }])),
        )?;
        let [c, i] = [client, intruder]
            .map(|p| ask(&p.netns, (web0.ip(), 8080).into(), WAIT).map(|r| r.is_some()));
        let (c, i) = (c?, i?);
        println!("{label}  client {}  intruder {}", verdict(c), verdict(i));
        verdicts.push((c, i));
    }
    let [(c1, i1), (c2, i2)] = verdicts[..] else {
        bail!("two policy steps expected");
    };
    ensure!(!c1 && !i1 && c2 && !i2, "policy verdicts are wrong");

    step(&format!(
        "DNS from prod/client through the node-local server {DNS} (AutoPath)"
    ));
    let dig = |name: &str| -> Result<Vec<String>> {
        let out = client
            .netns
            .command("dig")?
            .args([
                &format!("@{DNS}"),
                name,
                "A",
                "+noall",
                "+answer",
                "+tries=1",
                "+time=2",
            ])
            .output()
            .context("running dig (apt-get install dnsutils)")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect())
    };
    // The first step of glibc's search walk for `web.shop` in namespace `prod`.
    let walked = dig("web.shop.prod.svc.cluster.local")?;
    println!("dig web.shop.prod.svc.cluster.local   (what glibc asks first for `web.shop`)");
    for l in &walked {
        println!("  {l}");
    }
    let direct = dig("web.shop.svc.cluster.local")?;
    ensure!(
        walked
            .iter()
            .any(|l| l.contains("CNAME") && l.contains("web.shop.svc.cluster.local"))
            && walked.iter().any(|l| l.ends_with(&VIP.to_string()))
            && direct.iter().any(|l| l.ends_with(&VIP.to_string())),
        "AutoPath answers are wrong: {walked:?} {direct:?}"
    );
    println!("  -> one query instead of a walk: the answer names the Service and its ClusterIP");

    step("pool and cloud");
    let stats = node.node.run_async(|| async { node.stats().await })?;
    let p = &stats.pool;
    println!(
        "addresses: {} in use, {} idle, {} cooling, capacity {}; ENIs attached: {}",
        p.in_use, p.idle, p.cooling, p.capacity, p.enis_ready
    );
    println!("cloud calls: {} in total", p.total_cloud_calls());
    for (call, n) in &p.cloud_calls {
        println!("  {call:<40} {n}");
    }
    if let (Some(p50), Some(p99)) = (p.allocate_p50_us, p.allocate_p99_us) {
        println!("allocation latency: p50 <= {p50} us, p99 <= {p99} us (from the warm pool)");
    }
    if let Some(d) = &stats.dns {
        println!(
            "DNS: {} queries, {} AutoPath walks",
            d.queries, d.autopath_walks
        );
    }

    step("cleanup");
    for pod in &pods {
        let mut c = conf.clone();
        c["prevResult"] = pod.add.output.clone();
        let del = node.cni("DEL", &c, &pod.id(), Some(pod.netns.path()), "eth0", "")?;
        ensure!(
            del.success,
            "DEL {}/{}: {}",
            pod.namespace,
            pod.name,
            del.stdout
        );
    }
    // The agent deletes the pods' veth pairs after each DEL answered (the kernel takes 10-20 ms
    // per pair); count what is left once it is done.
    let _ = node.wait_retired(Duration::from_secs(10));
    let stats = node.node.run_async(|| async { node.stats().await })?;
    let veths = node
        .node
        .ip(&["-o", "link", "show"])?
        .lines()
        .filter(|l| l.contains(": cnk"))
        .count();
    println!(
        "DEL x{}: {} pods left on the node, {} host veths, {} addresses in use",
        pods.len(),
        stats.endpoints,
        veths,
        stats.pool.in_use
    );
    ensure!(
        stats.endpoints == 0 && veths == 0 && stats.pool.in_use == 0,
        "cleanup left something behind"
    );
    node.stop_agent()?;
    drop(pods);
    println!("agent stopped; node, VPC and pod namespaces removed");
    Ok(())
}
