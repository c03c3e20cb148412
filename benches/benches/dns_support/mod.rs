//! Shared by the DNS benches: tool checks, scratch directories, dnsmasq, dnsperf, CPU time.
#![allow(
    clippy::unwrap_used,
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "bench code; each bench uses a different subset of these helpers"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use cnikit_benches::Summary;
use cnikit_test_support::process::ExternalProcess;

pub use cnikit_test_support::process::on_path as which;

/// The cluster table of the DNS benches: `web.prod` (10.96.0.10) and `db.other` (10.96.0.11).
pub fn cluster_table() -> std::sync::Arc<cnikit_dns_autopath::cluster::ClusterTable> {
    use cnikit_dns_autopath::cluster::{ClusterTable, Service};
    let table = std::sync::Arc::new(ClusterTable::new("cluster.local".parse().unwrap()));
    for (ns, name, ip) in [("prod", "web", "10.96.0.10"), ("other", "db", "10.96.0.11")] {
        table
            .upsert_service(&Service::cluster_ip(ns, name, vec![ip.parse().unwrap()]))
            .unwrap();
    }
    table
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cnikit-bench-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("writing a scratch file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        fs::remove_dir_all(&self.0).ok();
    }
}

/// A free UDP+TCP port on 127.0.0.1 (bound and released; good enough for a bench).
pub fn free_port() -> u16 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding a probe socket");
    udp.local_addr().expect("local address").port()
}

/// dnsmasq's configuration: `listen`:`port`, a 10k cache, `hostN.bench.test` ->
/// 10.215.0.1 (TTL 3600), `www.example.test` A/AAAA, everything else NXDOMAIN.
pub fn dnsmasq_conf(listen: &str, port: u16, log_queries: bool) -> String {
    format!(
        "port={port}\nlisten-address={listen}\nbind-interfaces\nno-resolv\nno-hosts\nno-daemon\n\
         cache-size=10000\nlocal-ttl=3600\naddress=/bench.test/10.215.0.1\n\
         address=/www.example.test/198.18.100.1\naddress=/www.example.test/fd00::100:1\n\
         local=/#/\n{}",
        if log_queries {
            "log-queries\nlog-facility=-\n"
        } else {
            ""
        }
    )
}

/// Starts dnsmasq with `conf` from `cmd` (a plain `Command::new("dnsmasq")` or one that runs
/// in a namespace) and waits until it serves.
pub fn start_dnsmasq(dir: &TempDir, conf: &str, mut cmd: Command) -> ExternalProcess {
    let path = dir.write("dnsmasq.conf", conf);
    cmd.arg("-C").arg(path);
    let mut process = ExternalProcess::spawn("dnsmasq", cmd).expect("starting dnsmasq");
    process
        .wait_for_output("started", Duration::from_secs(5))
        .expect("dnsmasq did not start");
    process
}

/// CPU time (user + system) of process `pid` so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // The kernel reports clock ticks of USER_HZ = 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// One dnsperf run.
#[derive(Clone, Debug)]
pub struct PerfRun {
    pub qps: f64,
    pub completed: u64,
    pub lost: u64,
    pub latency: Option<Summary>,
}

/// Runs dnsperf against `server`:`port` with `queries` for `seconds`, one client, one thread,
/// 100 outstanding queries, recording every query's latency (`-v`) to a file.
pub fn dnsperf(dir: &TempDir, queries: &Path, server: &str, port: u16, seconds: u32) -> PerfRun {
    let log = dir.path().join(format!("dnsperf-{port}.log"));
    let status = Command::new("dnsperf")
        .args(["-s", server, "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args([
            "-l",
            &seconds.to_string(),
            "-c",
            "1",
            "-T",
            "1",
            "-q",
            "100",
            "-v",
        ])
        .stdout(fs::File::create(&log).expect("dnsperf log"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running dnsperf");
    assert!(status.success(), "dnsperf failed: {status}");
    parse_dnsperf(&fs::read_to_string(&log).unwrap_or_default())
}

/// Parses dnsperf's summary and its `-v` per-query lines (`> NOERROR name A 0.000123`).
pub fn parse_dnsperf(out: &str) -> PerfRun {
    let field = |label: &str| -> Option<&str> {
        out.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
    };
    let qps = field("Queries per second")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let completed = field("Queries completed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let lost = field("Queries lost")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let samples: Vec<Duration> = out
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .filter_map(|secs| Duration::try_from_secs_f64(secs).ok())
        .collect();
    PerfRun {
        qps,
        completed,
        lost,
        latency: Summary::of(&samples),
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
