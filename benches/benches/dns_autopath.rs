//! `dns_autopath`: what AutoPath saves a pod, for the four kinds of lookup.
//!
//! A node namespace runs two cnikit servers on the same cluster table and the same dnsmasq
//! upstream: 169.254.20.10 with AutoPath, 169.254.20.11 without. A pod namespace
//! (198.18.0.10, namespace `prod`, search list `prod.svc.cluster.local svc.cluster.local
//! cluster.local example.internal`, `ndots:5`) looks up
//!
//! - `own_service`: `web` (a Service in `prod`),
//! - `other_namespace`: `db.other`,
//! - `external`: `www.example.test` (served by dnsmasq),
//! - `nowhere`: `nothing.invalid`,
//!
//! with two clients: glibc (`getent ahosts`, a process per lookup, so its time includes process
//! start) and a stub walker in this process that behaves like glibc (A and AAAA together per
//! search step, steps in order) and times each whole lookup. Caches are warm: this is the
//! steady state of a node cache. The link is a veth pair, so a round trip costs tens of
//! microseconds here; across a real network each saved round trip is worth one network RTT.
//!
//! Prints one `BENCH dns_autopath kind=...` line per kind with queries per lookup and lookup
//! times, AutoPath off and on. Needs root, dnsmasq, getent and unshare.

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

#[path = "dns_support/mod.rs"]
mod dns_support;

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use cnikit_benches::{Summary, ms, privilege, report, smoke_mode, us};
use cnikit_dns_autopath::{
    AutoPathConfig, ClusterRecords, DnsServer, Name, PodIndex, ServerConfig, StaticPodIndex,
    upstream::{Forwarder, ForwarderConfig},
};
use cnikit_test_support::netns::{Role, TestNetns};
use dns_support::{TempDir, start_dnsmasq, which};

const SEARCH: [&str; 4] = [
    "prod.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
    "example.internal",
];
const NDOTS: usize = 5;
const KINDS: [(&str, &str); 4] = [
    ("own_service", "web"),
    ("other_namespace", "db.other"),
    ("external", "www.example.test"),
    ("nowhere", "nothing.invalid"),
];

/// A query for `name` (uncompressed wire) with id `id`.
fn query(id: u16, name: &Name, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(name.as_wire());
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// True when `reply` holds an address record (type A or AAAA) in its answer section.
fn has_address(reply: &[u8]) -> bool {
    let ancount = u16::from_be_bytes([reply[6], reply[7]]);
    let mut pos = 12;
    // Skip the question name and type/class.
    while pos < reply.len() && reply[pos] != 0 {
        pos += 1 + usize::from(reply[pos]);
    }
    pos += 5;
    for _ in 0..ancount {
        // Owner: labels, possibly ending in a pointer.
        loop {
            let Some(&len) = reply.get(pos) else {
                return false;
            };
            if len & 0xC0 == 0xC0 {
                pos += 2;
                break;
            }
            pos += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let Some(rtype) = reply.get(pos..pos + 2) else {
            return false;
        };
        if rtype == [0, 1] || rtype == [0, 28] {
            return true;
        }
        let Some(rdlen) = reply.get(pos + 8..pos + 10) else {
            return false;
        };
        pos += 10 + usize::from(u16::from_be_bytes([rdlen[0], rdlen[1]]));
    }
    false
}

/// A glibc-like lookup of `typed`: returns (resolved, queries sent).
fn stub_lookup(socket: &UdpSocket, typed: &str, id: &mut u16) -> (bool, u32) {
    let name: Name = typed.parse().unwrap();
    let mut candidates: Vec<Name> = Vec::new();
    if name.dots() >= NDOTS {
        candidates.push(name.clone());
    }
    for suffix in SEARCH {
        candidates.push(name.join(&suffix.parse().unwrap()).unwrap());
    }
    if name.dots() < NDOTS {
        candidates.push(name);
    }
    let mut sent = 0;
    let mut buf = [0u8; 2048];
    for candidate in &candidates {
        let ids = [id.wrapping_add(1), id.wrapping_add(2)];
        *id = id.wrapping_add(2);
        socket.send(&query(ids[0], candidate, 1)).unwrap();
        socket.send(&query(ids[1], candidate, 28)).unwrap();
        sent += 2;
        let mut found = false;
        let mut got = 0;
        while got < 2 {
            let n = socket.recv(&mut buf).expect("no reply within 2 s");
            let reply = &buf[..n];
            if ids.contains(&u16::from_be_bytes([reply[0], reply[1]])) {
                got += 1;
                found |= has_address(reply);
            }
        }
        if found {
            return (true, sent);
        }
    }
    (false, sent)
}

struct Sides {
    queries: [u64; 2],
    stub: [Summary; 2],
    getent: [Summary; 2],
}

fn main() {
    if !privilege::root("dns_autopath bench") {
        return;
    }
    for tool in ["dnsmasq", "getent", "unshare"] {
        if !privilege::check("dns_autopath bench", tool, which(tool)) {
            return;
        }
    }
    let smoke = smoke_mode();
    let (stub_runs, getent_runs) = if smoke { (5, 2) } else { (2000, 200) };

    let node = TestNetns::create(Role::Node).unwrap();
    let pod = TestNetns::create(Role::Pod).unwrap();
    node.veth_to(&pod, "veth-pod", "eth0").unwrap();
    node.ip(&["addr", "add", "198.18.0.1/24", "dev", "veth-pod"])
        .unwrap();
    for ip in ["169.254.20.10/32", "169.254.20.11/32"] {
        node.ip(&["addr", "add", ip, "dev", "lo"]).unwrap();
    }
    pod.ip(&["addr", "add", "198.18.0.10/24", "dev", "eth0"])
        .unwrap();
    pod.ip(&["addr", "add", "fd00:198:18::10/64", "dev", "eth0", "nodad"])
        .unwrap();
    for ip in ["169.254.20.10/32", "169.254.20.11/32"] {
        pod.ip(&["route", "add", ip, "via", "198.18.0.1"]).unwrap();
    }
    let dir = TempDir::new("dns-autopath");
    let dnsmasq = start_dnsmasq(
        &dir,
        &dns_support::dnsmasq_conf("127.0.0.1", 5354, false),
        node.command("dnsmasq").unwrap(),
    );

    let table = dns_support::cluster_table();
    let pods = Arc::new(StaticPodIndex::new());
    pods.insert("198.18.0.10".parse().unwrap(), "prod");
    let addrs: [SocketAddr; 2] = [
        "169.254.20.11:53".parse().unwrap(), // off
        "169.254.20.10:53".parse().unwrap(), // on
    ];
    let (runtime, servers) = node.run(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let servers: Vec<DnsServer> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let autopath = (i == 1).then(|| {
                    AutoPathConfig::with_extra_search(vec!["example.internal".parse().unwrap()])
                });
                let upstream = Forwarder::new(ForwarderConfig::new(vec![
                    "127.0.0.1:5354".parse().unwrap(),
                ]))
                .unwrap();
                runtime
                    .block_on(
                        DnsServer::builder(
                            ServerConfig::new(*addr).autopath(autopath).udp_workers(1),
                        )
                        .records(Arc::clone(&table) as Arc<dyn ClusterRecords>)
                        .pod_index(Arc::clone(&pods) as Arc<dyn PodIndex>)
                        .upstream(Arc::new(upstream))
                        .bind(),
                    )
                    .unwrap()
            })
            .collect();
        (runtime, servers)
    });
    dir.write("nsswitch.conf", "hosts: dns\n");
    for (i, addr) in addrs.iter().enumerate() {
        dir.write(
            &format!("resolv-{i}.conf"),
            &format!(
                "search {}\nnameserver {}\noptions ndots:{NDOTS} timeout:2 attempts:1\n",
                SEARCH.join(" "),
                addr.ip()
            ),
        );
    }
    // `runs` lookups by getent in one private mount namespace; the shell times each getent
    // process (fork, exec, the lookup) in nanoseconds.
    let getent = |mode: usize, name: &str, runs: usize| -> Vec<Duration> {
        let script = format!(
            "mount --bind {r} /etc/resolv.conf && mount --bind {n} /etc/nsswitch.conf || exit 9
             for i in $(seq {runs}); do
               s=$(date +%s%N); getent ahosts {name} >/dev/null; c=$?; e=$(date +%s%N)
               [ $c -le 2 ] || exit $c; echo $((e - s))
             done",
            r = dir.path().join(format!("resolv-{mode}.conf")).display(),
            n = dir.path().join("nsswitch.conf").display(),
        );
        let mut cmd: Command = pod.command("unshare").unwrap();
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "getent {name}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(Duration::from_nanos)
            .collect()
    };

    for (kind, name) in KINDS {
        let mut sides = Sides {
            queries: [0; 2],
            stub: [Summary::of(&[Duration::ZERO]).unwrap(); 2],
            getent: [Summary::of(&[Duration::ZERO]).unwrap(); 2],
        };
        for mode in 0..2 {
            let server = &servers[mode];
            let (stub, sent) = pod.run(|| {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                socket.connect(addrs[mode]).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut id = 1u16;
                stub_lookup(&socket, name, &mut id); // warm the cache
                let mut samples = Vec::with_capacity(stub_runs);
                let mut sent = 0;
                for _ in 0..stub_runs {
                    let t = Instant::now();
                    let (_, n) = stub_lookup(&socket, name, &mut id);
                    samples.push(t.elapsed());
                    sent = n;
                }
                (Summary::of(&samples).unwrap(), sent)
            });
            getent(mode, name, 1);
            let before = server.stats().queries();
            let times = getent(mode, name, getent_runs);
            assert_eq!(times.len(), getent_runs);
            let per_lookup = (server.stats().queries() - before) / getent_runs as u64;
            assert_eq!(
                u64::from(sent),
                per_lookup,
                "{kind}: the stub walker and glibc should send the same queries"
            );
            sides.queries[mode] = per_lookup;
            sides.stub[mode] = stub;
            sides.getent[mode] = Summary::of(&times).unwrap();
        }
        report(
            "dns_autopath",
            &[
                ("kind", &kind),
                ("queries_off", &sides.queries[0]),
                ("queries_on", &sides.queries[1]),
                ("stub_p50_us_off", &us(sides.stub[0].p50)),
                ("stub_p50_us_on", &us(sides.stub[1].p50)),
                ("stub_p99_us_off", &us(sides.stub[0].p99)),
                ("stub_p99_us_on", &us(sides.stub[1].p99)),
                ("getent_p50_ms_off", &ms(sides.getent[0].p50)),
                ("getent_p50_ms_on", &ms(sides.getent[1].p50)),
            ],
        );
    }
    for server in servers {
        runtime.block_on(server.shutdown());
    }
    drop(dnsmasq);
}
