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
