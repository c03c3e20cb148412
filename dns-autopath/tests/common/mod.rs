//! Helpers shared by the integration tests: a scripted upstream (a fake at the seam, for
//! deterministic unit-level checks), DNS clients, and the namespace topology with real
//! dnsmasq, glibc and dig.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use cnikit_dns_autopath::upstream::{Upstream, UpstreamError, UpstreamQuery};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, SOA},
    },
};

/// The cluster table the tests share: `web.prod` (ClusterIP, named port `http`), `db.other`
/// (ClusterIP), `pets.prod` (headless, `pet-0`), `ext.prod` (an `ExternalName` to
/// `www.example.test`).
pub fn cluster_table() -> Arc<cnikit_dns_autopath::cluster::ClusterTable> {
    use cnikit_dns_autopath::cluster::{ClusterTable, Endpoint, Protocol, Service};
    let ip = |s: &str| s.parse().unwrap();
    let table = Arc::new(ClusterTable::new("cluster.local".parse().unwrap()));
    let services = [
        Service::cluster_ip("prod", "web", vec![ip("10.96.0.10")]).with_port(
            Some("http"),
            Protocol::Tcp,
            80,
        ),
        Service::cluster_ip("other", "db", vec![ip("10.96.0.11")]),
        Service::headless(
            "prod",
            "pets",
            vec![Endpoint::with_hostname(ip("198.18.0.7"), "pet-0")],
        ),
        Service::external_name("prod", "ext", "www.example.test".parse().unwrap()),
    ];
    for service in &services {
        table.upsert_service(service).unwrap();
    }
    table
}

/// A DNS name in hickory's type.
pub fn hname(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// An A record.
pub fn a(name: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(hname(name), ttl, RData::A(A(ip.parse().unwrap())))
}

/// An AAAA record.
pub fn aaaa(name: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(hname(name), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
}

/// A CNAME record.
pub fn cname(name: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(hname(name), ttl, RData::CNAME(CNAME(hname(target))))
}

/// An SOA record for `zone` with negative TTL `minimum`.
pub fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    Record::from_rdata(
        hname(zone),
        ttl,
        RData::SOA(SOA::new(
            hname(&format!("ns.{zone}")),
            hname(&format!("hostmaster.{zone}")),
            1,
            3600,
            600,
            86400,
            minimum,
        )),
    )
}

/// The canonical text of a name (lower case, trailing dot).
pub fn canonical(name: &str) -> String {
    name.parse::<cnikit_dns_autopath::Name>()
        .unwrap()
        .to_string()
}

/// What the scripted upstream answers for one question.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

impl Scripted {
    pub fn records(answers: Vec<Record>) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
        }
    }

    pub fn nxdomain(authorities: Vec<Record>) -> Self {
        Self {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            authorities,
        }
    }
}

/// An upstream at the seam that answers from a script, counts questions, and can be slowed
/// down or switched off. Unscripted names get NXDOMAIN.
#[derive(Default)]
pub struct ScriptedUpstream {
    script: Mutex<HashMap<(String, u16), Scripted>>,
    pub asked: Mutex<Vec<(String, u16)>>,
    pub calls: AtomicUsize,
    pub down: AtomicBool,
    delay_ms: AtomicUsize,
}

impl ScriptedUpstream {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, name: &str, qtype: RecordType, reply: Scripted) {
        let key = (canonical(name), u16::from(qtype));
        self.script.lock().unwrap().insert(key, reply);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            usize::try_from(delay.as_millis()).unwrap(),
            Ordering::Relaxed,
        );
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Questions asked for `name` (any type).
    pub fn asked_for(&self, name: &str) -> usize {
        let name = canonical(name);
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| *n == name)
            .count()
    }
}

#[async_trait::async_trait]
impl Upstream for ScriptedUpstream {
    async fn query(&self, q: &UpstreamQuery) -> Result<Vec<u8>, UpstreamError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let name = q.name.to_string();
        self.asked.lock().unwrap().push((name.clone(), q.qtype.0));
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        if self.down.load(Ordering::Relaxed) {
            return Err(UpstreamError::Other {
                server: None,
                source: "scripted upstream is down".into(),
            });
        }
        let scripted = self
            .script
            .lock()
            .unwrap()
            .get(&(name.clone(), q.qtype.0))
            .cloned()
            .unwrap_or_else(|| Scripted::nxdomain(Vec::new()));
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = scripted.rcode;
        m.metadata.recursion_available = true;
        let mut query = Query::query(hname(&name), RecordType::from(q.qtype.0));
        query.set_query_class(DNSClass::from(q.qclass.0));
        m.add_query(query);
        m.add_answers(scripted.answers);
        m.add_authorities(scripted.authorities);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        Ok(m.to_vec().unwrap())
    }
}

/// A query message with EDNS (payload 1232) and RD.
pub fn query_message(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(hname(name), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    (NEXT.fetch_add(7919, Ordering::Relaxed) % 65_536) as u16
}

/// Sends `bytes` over UDP from `local` and waits up to 3 s for the reply.
pub async fn udp_exchange_from(local: IpAddr, server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = tokio::net::UdpSocket::bind((local, 0)).await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .expect("no reply within 3 s")
        .unwrap();
    buf.truncate(n);
    buf
}

/// Sends a query over UDP from 127.0.0.1 and parses the reply.
pub async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_from("127.0.0.1".parse().unwrap(), server, name, qtype).await
}

/// Sends a query over UDP from `local` and parses the reply (checking the ID).
pub async fn ask_from(local: IpAddr, server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = query_message(name, qtype, true);
    let reply = udp_exchange_from(local, server, &q.to_vec().unwrap()).await;
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

/// Sends a message over TCP and parses the reply.
pub async fn ask_tcp(server: SocketAddr, query: &Message) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let bytes = query.to_vec().unwrap();
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await.unwrap();
    Message::from_vec(&reply).unwrap()
}

/// The answer records as `name TTL TYPE data` strings.
pub fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

/// Real clients and servers in test namespaces.
pub mod netns {
    use std::{
        fs,
        path::{Path, PathBuf},
        process::Command,
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
        time::Duration,
    };

    use cnikit_dns_autopath::{DnsServer, DnsServerBuilder};
    use cnikit_test_support::{
        netns::{Role, TestNetns},
        process::ExternalProcess,
    };

    /// The node-local DNS address.
    pub const DNS_IP: &str = "169.254.20.10";
    /// The pod's address.
    pub const POD_IP: &str = "198.18.0.10";
    /// dnsmasq's address inside the node namespace.
    pub const UPSTREAM: &str = "127.0.0.1:5354";

    #[allow(unused_imports, reason = "only the real-client tests gate on tools")]
    pub use cnikit_test_support::process::on_path as which;

    /// A directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cnikit-dns-{}-{}-{tag}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            fs::remove_dir_all(&self.0).ok();
        }
    }

    /// A node namespace (server on 169.254.20.10, dnsmasq on 127.0.0.1:5354) and a pod
    /// namespace (198.18.0.10 and a ULA IPv6 address, so glibc asks for AAAA too) joined by a
    /// veth pair.
    pub struct Topology {
        pub node: TestNetns,
        pub pod: TestNetns,
        pub dir: TempDir,
    }

    impl Topology {
        pub fn new() -> Self {
            let node = TestNetns::create(Role::Node).unwrap();
            let pod = TestNetns::create(Role::Pod).unwrap();
            node.veth_to(&pod, "veth-pod", "eth0").unwrap();
            node.ip(&["addr", "add", "198.18.0.1/24", "dev", "veth-pod"])
                .unwrap();
            node.ip(&["addr", "add", &format!("{DNS_IP}/32"), "dev", "lo"])
                .unwrap();
            pod.ip(&["addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"])
                .unwrap();
            pod.ip(&["addr", "add", "fd00:198:18::10/64", "dev", "eth0", "nodad"])
                .unwrap();
            pod.ip(&["route", "add", &format!("{DNS_IP}/32"), "via", "198.18.0.1"])
                .unwrap();
            let dir = TempDir::new("topo");
            dir.write(
                "resolv.conf",
                &format!(
                    "search prod.svc.cluster.local svc.cluster.local cluster.local \
                     example.internal\nnameserver {DNS_IP}\noptions ndots:5 timeout:2 attempts:1\n"
                ),
            );
            dir.write("nsswitch.conf", "hosts: dns\n");
            Self { node, pod, dir }
        }

        /// `getent ahosts <name>` in the pod, with the pod's resolv.conf bind-mounted over
        /// /etc/resolv.conf in a private mount namespace (the host's file is never touched).
        /// Returns whether the name resolved, and the output.
        pub fn getent(&self, name: &str) -> (bool, String) {
            let script = format!(
                "mount --bind {r} /etc/resolv.conf && mount --bind {n} /etc/nsswitch.conf \
                 && exec getent ahosts {name}",
                r = self.dir.path().join("resolv.conf").display(),
                n = self.dir.path().join("nsswitch.conf").display(),
            );
            let out = self
                .pod
                .command("unshare")
                .unwrap()
                .args([
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.code() == Some(0) || out.status.code() == Some(2),
                "getent {name}: {:?} {stderr}",
                out.status
            );
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }

        /// `dig @169.254.20.10 <args>` in the pod; returns stdout.
        pub fn dig(&self, args: &[&str]) -> String {
            let out = self
                .pod
                .command("dig")
                .unwrap()
                .arg(format!("@{DNS_IP}"))
                .args(["+time=3", "+tries=1"])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// Starts dnsmasq in the node namespace with `extra` config lines, logging queries.
        pub fn dnsmasq(&self, extra: &str) -> Dnsmasq {
            let conf = self.dir.write(
                "dnsmasq.conf",
                &format!(
                    "port=5354\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                     no-daemon\ncache-size=10000\nlocal-ttl=3600\nlog-queries\nlog-facility=-\n\
                     address=/www.example.test/198.18.100.1\n\
                     address=/www.example.test/fd00::100:1\nlocal=/#/\n{extra}\n"
                ),
            );
            let mut cmd = self.node.command("dnsmasq").unwrap();
            cmd.arg("-C").arg(conf);
            let mut process = ExternalProcess::spawn("dnsmasq", cmd).unwrap();
            process
                .wait_for_output("started", Duration::from_secs(5))
                .unwrap();
            Dnsmasq { process }
        }

        /// Starts our server in the node namespace on its own multi-threaded runtime.
        pub fn server(&self, builder: DnsServerBuilder) -> TestServer {
            self.node.run(|| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let server = runtime.block_on(builder.bind()).unwrap();
                TestServer {
                    server: Some(server),
                    runtime: Arc::new(runtime),
                }
            })
        }
    }

    /// A running dnsmasq.
    pub struct Dnsmasq {
        pub process: ExternalProcess,
    }

    impl Dnsmasq {
        /// Queries dnsmasq logged so far (`query[...]` lines).
        pub fn queries(&self) -> usize {
            self.process.output().matches("query[").count()
        }

        /// Queries logged for `name`.
        pub fn queries_for(&self, name: &str) -> usize {
            self.process
                .output()
                .lines()
                .filter(|l| l.contains("query[") && l.contains(&format!(" {name} ")))
                .count()
        }

        pub fn stop(self) {
            self.process.stop(Duration::from_secs(2)).unwrap();
        }
    }

    /// Our server and the runtime its slow path runs on.
    pub struct TestServer {
        pub server: Option<DnsServer>,
        pub runtime: Arc<tokio::runtime::Runtime>,
    }

    impl TestServer {
        pub fn get(&self) -> &DnsServer {
            self.server.as_ref().unwrap()
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(server) = self.server.take() {
                self.runtime.block_on(server.shutdown());
            }
        }
    }

    /// Runs `cmd` and returns stdout (panics on failure to start).
    pub fn output(mut cmd: Command) -> String {
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    }
}
