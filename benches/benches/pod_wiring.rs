//! `pod_wiring`: what wiring a pod costs, per driver: setup and teardown latency (p50, p99),
//! one pod at a time and 16 pods at once, with the reference `ptp` CNI plugin (Debian
//! `containernetworking-plugins`, `/usr/lib/cni/ptp` + `host-local`) measured in the same run.
//!
//! Everything happens in throwaway namespaces: a node with 16 ENI stand-ins (veths to a peer
//! namespace) and 16 pod namespaces. IPv4-only pods for the comparison with `ptp` (which gets one
//! IPv4 address too); one extra line for dual-stack veth pods. IPVLAN cannot run on this host
//! kernel: the probe's answer is printed instead. Needs root (fails under `CI=true` without it).

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use cnikit_benches::{Summary, ms, privilege, report, smoke_mode};
use cnikit_netns_setup::{
    EniRef, ExclusiveEniDriver, IpVlanDriver, Netns, Node, PodDriver, PodNetwork, VethDriver,
    netlink::RtConnector,
    probe::{Support, probe},
};
use cnikit_test_support::netns::{Role, TestNetns};
use criterion::{Criterion, criterion_group, criterion_main};

const PODS: usize = 16;
const PTP: &str = "/usr/lib/cni/ptp";

struct Bed {
    _peer: TestNetns,
    node: TestNetns,
    pods: Vec<TestNetns>,
}

impl Bed {
    fn new() -> Self {
        let peer = TestNetns::create(Role::Vpc).unwrap();
        let node = TestNetns::create(Role::Node).unwrap();
        for i in 1..=PODS {
            node.veth_to(&peer, &format!("eth{i}"), &format!("e{i}"))
                .unwrap();
        }
        let pods = (0..PODS)
            .map(|_| TestNetns::create(Role::Pod).unwrap())
            .collect();
        Self {
            _peer: peer,
            node,
            pods,
        }
    }

    /// Pod `i`'s spec: IPv4 (and IPv6 with `dual`) on `eni`.
    fn spec(&self, i: usize, eni: &str, dual: bool) -> PodNetwork {
        let n = u8::try_from(i).unwrap();
        let mut spec = PodNetwork::new(
            format!("bench-{i}"),
            Netns::from_path(self.pods[i].path()).unwrap(),
            EniRef::Name(eni.to_owned()),
        )
        .with_ip(
            format!("198.18.0.{}/24", 20 + n).parse().unwrap(),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        )
        .with_service_cidr("198.19.0.0/20".parse().unwrap())
        .with_node_ip(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)));
        if dual {
            spec = spec.with_ip(
                format!("2001:2::{:x}/64", 0x20 + u16::from(n))
                    .parse()
                    .unwrap(),
                "2001:2::1".parse().unwrap(),
            );
        }
        spec
    }
}

/// Latencies of one driver, one pod at a time.
fn sequential(
    rt: &tokio::runtime::Runtime,
    node: &Node,
    driver: &dyn PodDriver,
    specs: &[PodNetwork],
    rounds: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut setups, mut teardowns) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let spec = &specs[round % specs.len()];
        let t = Instant::now();
        rt.block_on(driver.setup(node, spec)).unwrap();
        setups.push(t.elapsed());
        let t = Instant::now();
        rt.block_on(driver.teardown(node, spec)).unwrap();
        teardowns.push(t.elapsed());
    }
    (setups, teardowns)
}

/// Latencies with all of `specs` wired at once, and the wall time of each batch.
fn concurrent(
    rt: &tokio::runtime::Runtime,
    node: &Node,
    driver: &Arc<dyn PodDriver>,
    specs: &[PodNetwork],
    rounds: usize,
) -> ([Vec<Duration>; 2], [Duration; 2]) {
    let mut latencies = [Vec::new(), Vec::new()];
    let mut walls = [Duration::ZERO; 2];
    for _ in 0..rounds {
        for (phase, teardown) in [(0, false), (1, true)] {
            let started = Instant::now();
            let tasks: Vec<_> = specs
                .iter()
                .map(|spec| {
                    let (node, driver, spec) = (node.clone(), Arc::clone(driver), spec.clone());
                    rt.spawn(async move {
                        let t = Instant::now();
                        if teardown {
                            driver.teardown(&node, &spec).await.unwrap();
                        } else {
                            driver.setup(&node, &spec).await.unwrap();
                        }
                        t.elapsed()
                    })
                })
                .collect();
            for task in tasks {
                latencies[phase].push(rt.block_on(task).unwrap());
            }
            walls[phase] += started.elapsed();
        }
    }
    (latencies, walls)
}

fn per_second(count: usize, total: Duration) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let count = count as f64;
    count / total.as_secs_f64()
}

fn report_driver(
    name: &str,
    (setups, teardowns): &(Vec<Duration>, Vec<Duration>),
    (latencies, walls): &([Vec<Duration>; 2], [Duration; 2]),
) {
    let (Some(s), Some(t)) = (Summary::of(setups), Summary::of(teardowns)) else {
        return;
    };
    let sequential_rate = per_second(setups.len(), setups.iter().sum());
    report(
        "pod_wiring",
        &[
            ("driver", &name),
            ("mode", &"sequential"),
            ("setup_p50_ms", &ms(s.p50)),
            ("setup_p90_ms", &ms(s.p90)),
            ("setup_p99_ms", &ms(s.p99)),
            ("teardown_p50_ms", &ms(t.p50)),
            ("teardown_p99_ms", &ms(t.p99)),
            ("setups_per_s", &format!("{sequential_rate:.0}")),
            ("samples", &setups.len()),
        ],
    );
    let (Some(cs), Some(ct)) = (Summary::of(&latencies[0]), Summary::of(&latencies[1])) else {
        return;
    };
    let concurrent_rate = per_second(latencies[0].len(), walls[0]);
    let teardown_rate = per_second(latencies[1].len(), walls[1]);
    let sequential_teardown_rate = per_second(teardowns.len(), teardowns.iter().sum());
    report(
        "pod_wiring",
        &[
            ("driver", &name),
            ("mode", &"concurrent16"),
            ("setup_p50_ms", &ms(cs.p50)),
            ("setup_p99_ms", &ms(cs.p99)),
            ("teardown_p50_ms", &ms(ct.p50)),
            ("teardown_p99_ms", &ms(ct.p99)),
            ("setups_per_s", &format!("{concurrent_rate:.0}")),
            (
                "setup_speedup",
                &format!("{:.2}", concurrent_rate / sequential_rate),
            ),
            ("teardowns_per_s", &format!("{teardown_rate:.0}")),
            (
                "teardown_speedup",
                &format!("{:.2}", teardown_rate / sequential_teardown_rate),
            ),
            ("samples", &latencies[0].len()),
        ],
    );
}

/// The reference plugin, exec'd directly inside the node namespace as a runtime would.
struct Ptp {
    dir: PathBuf,
}

impl Ptp {
    fn new() -> Option<Self> {
        std::path::Path::new(PTP).exists().then(|| {
            let dir = std::env::temp_dir().join(format!("cnikit-ptp-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self { dir }
        })
    }

    fn config(&self) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"bench","type":"ptp","ipMasq":false,"mtu":1500,"ipam":{{"type":"host-local","subnet":"198.19.64.0/18","dataDir":"{}"}}}}"#,
            self.dir.display()
        )
    }

    fn run(&self, bed: &Bed, command: &str, pod: usize) -> Duration {
        use std::io::Write as _;
        let started = Instant::now();
        let mut child = bed
            .node
            .command(PTP)
            .unwrap()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("ptp-{pod}"))
            .env("CNI_NETNS", bed.pods[pod].path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.config().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ptp {command}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        started.elapsed()
    }

    fn measure(
        &self,
        bed: &Bed,
        rounds: usize,
        batches: usize,
    ) -> (
        Vec<Duration>,
        Vec<Duration>,
        [Vec<Duration>; 2],
        [Duration; 2],
    ) {
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            adds.push(self.run(bed, "ADD", round % PODS));
            dels.push(self.run(bed, "DEL", round % PODS));
        }
        let mut latencies = [Vec::new(), Vec::new()];
        let mut walls = [Duration::ZERO; 2];
        for _ in 0..batches {
            for (phase, command) in [(0, "ADD"), (1, "DEL")] {
                let started = Instant::now();
                let results: Vec<Duration> = std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..PODS)
                        .map(|pod| scope.spawn(move || self.run(bed, command, pod)))
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                walls[phase] += started.elapsed();
                latencies[phase].extend(results);
            }
        }
        (adds, dels, latencies, walls)
    }
}

impl Drop for Ptp {
    fn drop(&mut self) {
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

fn bench(c: &mut Criterion) {
    if !privilege::root("pod_wiring bench") {
        return;
    }
    let smoke = smoke_mode();
    let (rounds, batches) = if smoke { (3, 1) } else { (300, 12) };
    // One pod at a time on a current-thread runtime, as a CNI plugin process runs; 16 at once on
    // a two-worker runtime, as a node agent would. Each runtime drives its own node socket.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bed = Bed::new();
    let node_netns = Netns::from_path(bed.node.path()).unwrap();
    let connect = |rt: &tokio::runtime::Runtime, sockets| {
        let _entered = rt.enter();
        Node::connect_pool(&node_netns, sockets).unwrap()
    };
    let (node, node_multi) = (connect(&single, 1), connect(&multi, PODS));
    let rt = &single;

    // veth: every pod on eth1.
    let veth: Arc<dyn PodDriver> = Arc::new(VethDriver);
    let specs: Vec<_> = (0..PODS).map(|i| bed.spec(i, "eth1", false)).collect();
    rt.block_on(veth.ensure_eni(&node, &specs[0])).unwrap();
    let mut group = c.benchmark_group("pod_wiring");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("veth_setup", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                rt.block_on(veth.setup(&node, &specs[0])).unwrap();
                total += t.elapsed();
                rt.block_on(veth.teardown(&node, &specs[0])).unwrap();
            }
            total
        });
    });
    group.finish();
    let seq = sequential(rt, &node, veth.as_ref(), &specs, rounds);
    let conc = concurrent(&multi, &node_multi, &veth, &specs, batches);
    report_driver("veth", &seq, &conc);
    let dual: Vec<_> = (0..PODS).map(|i| bed.spec(i, "eth1", true)).collect();
    let (setups, teardowns) = sequential(rt, &node, veth.as_ref(), &dual, rounds / 3 + 1);
    if let (Some(s), Some(t)) = (Summary::of(&setups), Summary::of(&teardowns)) {
        report(
            "pod_wiring",
            &[
                ("driver", &"veth-dualstack"),
                ("mode", &"sequential"),
                ("setup_p50_ms", &ms(s.p50)),
                ("setup_p99_ms", &ms(s.p99)),
                ("teardown_p50_ms", &ms(t.p50)),
                ("teardown_p99_ms", &ms(t.p99)),
                ("samples", &setups.len()),
            ],
        );
    }
    let veth_setup_p50 = Summary::of(&seq.0).map(|s| s.p50);
    rt.block_on(veth.release_eni(&node, &specs[0])).unwrap();

    // Exclusive ENI: pod i gets eth{i+1}.
    let exclusive: Arc<dyn PodDriver> = Arc::new(ExclusiveEniDriver::default());
    let specs: Vec<_> = (0..PODS)
        .map(|i| bed.spec(i, &format!("eth{}", i + 1), false))
        .collect();
    let seq = sequential(rt, &node, exclusive.as_ref(), &specs, rounds / 2 + 1);
    let conc = concurrent(&multi, &node_multi, &exclusive, &specs, batches);
    report_driver("exclusive-eni", &seq, &conc);

    // IPVLAN: only where the kernel has it (the qemu VM tests cover it on Debian's kernels).
    let caps = rt.block_on(probe(&RtConnector)).unwrap();
    match &caps.ipvlan {
        Support::Supported => {
            let ipvlan: Arc<dyn PodDriver> = Arc::new(IpVlanDriver);
            let specs: Vec<_> = (0..PODS).map(|i| bed.spec(i, "eth1", false)).collect();
            rt.block_on(ipvlan.ensure_eni(&node, &specs[0])).unwrap();
            let seq = sequential(rt, &node, ipvlan.as_ref(), &specs, rounds);
            let conc = concurrent(&multi, &node_multi, &ipvlan, &specs, batches);
            report_driver("ipvlan", &seq, &conc);
            rt.block_on(ipvlan.release_eni(&node, &specs[0])).unwrap();
        }
        Support::Unsupported(why) => report(
            "pod_wiring",
            &[
                ("driver", &"ipvlan"),
                ("status", &"unsupported"),
                ("reason", &format!("{why:?}")),
            ],
        ),
    }

    // The reference plugin, same machine, same run.
    match Ptp::new() {
        Some(ptp) => {
            let ptp_rounds = if smoke { 2 } else { rounds / 3 };
            let (adds, dels, latencies, walls) = ptp.measure(&bed, ptp_rounds, batches);
            report_driver("ptp", &(adds.clone(), dels), &(latencies, walls));
            if let (Some(ours), Some(theirs)) = (veth_setup_p50, Summary::of(&adds)) {
                report(
                    "pod_wiring",
                    &[
                        ("compare", &"veth_setup_vs_ptp_add"),
                        (
                            "p50_ratio",
                            &format!("{:.1}", theirs.p50.as_secs_f64() / ours.as_secs_f64()),
                        ),
                    ],
                );
            }
        }
        None => report(
            "pod_wiring",
            &[("driver", &"ptp"), ("status", &"absent"), ("path", &PTP)],
        ),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
