//! Shared by the ebpf-dataplane comparison benches: service sets, the equivalent kube-proxy
//! (iptables mode) NAT ruleset, `iptables-restore` runs inside a test namespace, and a routed
//! client/server pod topology for latency measurements.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each bench target uses a different subset"
)]

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use cnikit_ebpf_dataplane::{Capacity, Service, ServiceKey};
use cnikit_test_support::{netns::TestNetns, pods::PodNetwork, process::pin_current_thread};

/// Endpoints per service, as in the issue and kube-proxy's own scale tests.
pub const BACKENDS: usize = 10;
/// The cluster (pod) CIDR kube-proxy is told about.
pub const CLUSTER_CIDR: &str = "198.18.0.0/15";
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const SERVER_PORT: u16 = 8080;

/// Capacities for the service benches: room for 10k services, `conntrack` entries, little else.
pub fn capacity(conntrack: u32) -> Capacity {
    Capacity {
        services: 16_384,
        endpoints: 16,
        conntrack,
        affinity: 1_024,
        policy_peer_prefixes: 16,
        policy_port_prefixes: 16,
    }
}

/// The VIP of service `i` (198.19.0.0/16).
pub fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xc613_0000 + u32::try_from(i % 65_536).unwrap_or(0))
}

/// Service `i` with 10 backends in 198.18.128.0/17 (addresses need not exist: nothing connects
/// to them).
pub fn service(i: usize, generation: usize) -> Service {
    let backends = (0..BACKENDS).map(|j| {
        let n = u32::try_from((i * BACKENDS + j + generation) % 32_768).unwrap_or(0);
        SocketAddrV4::new(Ipv4Addr::from(0xc612_8000 + n), SERVER_PORT)
    });
    Service::new(ServiceKey::tcp(vip(i), 80), backends)
}

/// The addresses the measured service's backends use: 10 addresses of the server pod.
pub fn server_addresses() -> Vec<Ipv4Addr> {
    (1..=u8::try_from(BACKENDS).unwrap_or(10))
        .map(|j| Ipv4Addr::new(198, 18, 2, j))
        .collect()
}

fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn chain(prefix: &str, name: &str) -> String {
    format!("{prefix}-{:016X}", hash(name))
}

/// The chains and rules kube-proxy (iptables mode) writes for one ClusterIP service: a
/// KUBE-SERVICES jump, a KUBE-SVC chain (masquerade mark for off-cluster sources, then one
/// random-probability jump per endpoint) and a KUBE-SEP chain per endpoint (hairpin mark,
/// DNAT): 2 + 3N rules, 1 + N chains.
struct ServiceRules {
    declarations: String,
    dispatch: String,
    chains: String,
}

fn service_rules(service: &Service) -> ServiceRules {
    let key = service.key;
    let name = format!("bench/svc-{}:http", key.vip);
    let svc_chain = chain("KUBE-SVC", &format!("{name}/tcp"));
    let mut out = ServiceRules {
        declarations: format!(":{svc_chain} - [0:0]\n"),
        dispatch: format!(
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {}/32 --dport {} -j {svc_chain}\n",
            key.vip, key.port
        ),
        chains: format!(
            "-A {svc_chain} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {}/32 --dport {} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ\n",
            key.vip, key.port
        ),
    };
    let n = service.backends.len();
    for (j, backend) in service.backends.iter().enumerate() {
        let sep = chain("KUBE-SEP", &format!("{name}/tcp/{backend}"));
        let _ = writeln!(out.declarations, ":{sep} - [0:0]");
        if j + 1 < n {
            #[expect(clippy::cast_precision_loss, reason = "small counts")]
            let probability = 1.0 / (n - j) as f64;
            let _ = writeln!(
                out.chains,
                "-A {svc_chain} -m comment --comment \"{name} -> {backend}\" -m statistic --mode random --probability {probability:.11} -j {sep}"
            );
        } else {
            let _ = writeln!(
                out.chains,
                "-A {svc_chain} -m comment --comment \"{name} -> {backend}\" -j {sep}"
            );
        }
        let _ = writeln!(
            out.chains,
            "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ",
            backend.ip()
        );
        let _ = writeln!(
            out.chains,
            "-A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {backend}"
        );
    }
    out
}

const HEADER: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n";
const FIXED_RULES: &str = "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n";
/// The built-in chains' jumps into kube-proxy's chains.
const JUMPS: &str = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n";
const NODEPORTS_JUMP: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";

/// kube-proxy's full NAT ruleset for `services` (what a full sync restores), including the jumps
/// from the built-in chains, so it can be restored plainly (replacing the nat table) or with
/// `--noflush` into an empty table.
pub fn full_ruleset(services: &[Service]) -> String {
    let rules: Vec<ServiceRules> = services.iter().map(service_rules).collect();
    let mut text = String::with_capacity(services.len() * 4_000);
    text.push_str(HEADER);
    for r in &rules {
        text.push_str(&r.declarations);
    }
    text.push_str(JUMPS);
    text.push_str(FIXED_RULES);
    for r in &rules {
        text.push_str(&r.dispatch);
    }
    text.push_str(NODEPORTS_JUMP);
    for r in &rules {
        text.push_str(&r.chains);
    }
    text.push_str("COMMIT\n");
    text
}

/// kube-proxy's partial sync after one service changed (`MinimizeIPTablesRestore`): all of
/// KUBE-SERVICES plus the changed service's chains.
pub fn partial_ruleset(services: &[Service], changed: &Service) -> String {
    let changed_rules = service_rules(changed);
    let mut text = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    text.push_str(&changed_rules.declarations);
    for s in services {
        text.push_str(&service_rules(s).dispatch);
    }
    text.push_str(NODEPORTS_JUMP);
    text.push_str(&changed_rules.chains);
    text.push_str("COMMIT\n");
    text
}

/// Runs `<restore> --noflush` inside `ns` with `rules` on stdin, as kube-proxy does; returns how
/// long it took (process start included: kube-proxy also spawns it for every sync).
///
/// # Panics
/// When the restore fails.
pub fn iptables_restore(ns: &TestNetns, restore: &str, rules: &str) -> Duration {
    restore_with(ns, restore, &["--noflush"], rules)
}

/// Runs a plain `<restore>` (replacing the nat table) inside `ns`.
///
/// # Panics
/// When the restore fails.
pub fn iptables_replace(ns: &TestNetns, restore: &str, rules: &str) -> Duration {
    restore_with(ns, restore, &[], rules)
}

/// Runs `<restore> <args>` inside `ns` with `rules` on stdin; returns how long it took.
///
/// # Panics
/// When the restore fails.
pub fn restore_with(ns: &TestNetns, restore: &str, args: &[&str], rules: &str) -> Duration {
    let started = Instant::now();
    let mut child = ns
        .command(restore)
        .unwrap()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {restore} (install iptables): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "{restore} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

/// Number of rules in the nat table of `ns` (to check the ruleset landed).
pub fn nat_rules(ns: &TestNetns, save: &str) -> usize {
    let out = ns
        .command(save)
        .unwrap()
        .args(["-t", "nat"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .count()
}

/// A client pod and a server pod (holding [`server_addresses`] too) behind a forwarding node,
/// with a server answering one byte per connection and closing.
pub struct Topology {
    pub net: PodNetwork,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl Topology {
    pub fn new() -> Self {
        let mut net = PodNetwork::new().unwrap();
        net.add_pod(CLIENT).unwrap();
        let server = net.add_pod(SERVER).unwrap();
        let pod = net.pod(server);
        for addr in server_addresses() {
            pod.netns
                .ip(&["addr", "add", &format!("{addr}/32"), "dev", &pod.pod_if])
                .unwrap();
            net.node()
                .ip(&["route", "add", &format!("{addr}/32"), "dev", &pod.host_if])
                .unwrap();
        }
        let listener = pod
            .netns
            .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, SERVER_PORT)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let server = std::thread::spawn(move || serve(&listener, &flag));
        Self {
            net,
            stop,
            server: Some(server),
        }
    }

    pub fn client(&self) -> &TestNetns {
        &self.net.pod(0).netns
    }

    /// `count` connections (connect, one byte each way); their durations.
    pub fn connections(&self, to: SocketAddrV4, count: usize) -> Vec<Duration> {
        self.client().run(|| {
            pin_current_thread(0).ok();
            (0..count)
                .map(|_| {
                    let started = Instant::now();
                    let mut stream = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
                        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
                    stream.write_all(b"x").unwrap();
                    let mut byte = [0u8; 1];
                    stream.read_exact(&mut byte).unwrap();
                    let took = started.elapsed();
                    let mut rest = Vec::new();
                    stream.read_to_end(&mut rest).ok();
                    took
                })
                .collect()
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept.
        self.net
            .pod(1)
            .netns
            .run(|| TcpStream::connect((SERVER, SERVER_PORT)))
            .ok();
        if let Some(server) = self.server.take() {
            server.join().ok();
        }
    }
}

/// Blocking accept (no polling delay in the measured path): read a byte, echo it, close.
fn serve(listener: &TcpListener, stop: &AtomicBool) {
    pin_current_thread(0).ok();
    while let Ok((mut stream, _)) = listener.accept() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut byte = [0u8; 1];
        if stream.read_exact(&mut byte).is_ok() {
            stream.write_all(&byte).ok();
        }
    }
}
