//! [`Forwarder`]: the UDP/TCP forwarding [`Upstream`].

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout_at,
};

use super::{Upstream, UpstreamError, UpstreamQuery};
use crate::wire::{
    self, FLAG_CD, FLAG_QR, FLAG_RD, FLAG_TC, HEADER_LEN, RCODE_NOTIMP, RCODE_REFUSED,
    RCODE_SERVFAIL, names_equal_ignore_case,
};

/// Forwarding settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ForwarderConfig {
    /// Upstream servers, tried in order starting from the last one that answered.
    pub servers: Vec<SocketAddr>,
    /// Longest wait for one server.
    #[serde(default = "default_attempt_timeout", with = "crate::secs")]
    pub attempt_timeout: Duration,
    /// Longest wait for a query in total, across all servers. Keep it below the clients'
    /// own timeout (glibc: 5 s) so that they get SERVFAIL rather than silence.
    #[serde(default = "default_total_timeout", with = "crate::secs")]
    pub total_timeout: Duration,
    /// UDP payload size advertised upstream (EDNS0); 1232 avoids IP fragmentation.
    #[serde(default = "default_payload")]
    pub edns_payload: u16,
    /// Always use TCP (`NodeLocal DNSCache`'s `force_tcp` towards kube-dns).
    #[serde(default)]
    pub force_tcp: bool,
    /// Retry over TCP when a UDP answer is truncated.
    #[serde(default = "yes")]
    pub tcp_fallback: bool,
}

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_total_timeout() -> Duration {
    Duration::from_secs(4)
}
fn default_payload() -> u16 {
    1232
}
fn yes() -> bool {
    true
}

impl ForwarderConfig {
    /// Defaults for `servers`: 2 s per attempt, 4 s in total, EDNS payload 1232, UDP with TCP
    /// retry on truncation.
    #[must_use]
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self {
            servers,
            attempt_timeout: default_attempt_timeout(),
            total_timeout: default_total_timeout(),
            edns_payload: default_payload(),
            force_tcp: false,
            tcp_fallback: true,
        }
    }

    /// Sets the per-attempt and total timeouts.
    #[must_use]
    pub fn timeouts(mut self, attempt: Duration, total: Duration) -> Self {
        self.attempt_timeout = attempt;
        self.total_timeout = total;
        self
    }

    /// Sets `force_tcp`.
    #[must_use]
    pub fn force_tcp(mut self, force_tcp: bool) -> Self {
        self.force_tcp = force_tcp;
        self
    }
}

/// Counters of a [`Forwarder`] (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwarderStats {
    /// Questions asked.
    pub queries: u64,
    /// UDP exchanges started.
    pub udp_exchanges: u64,
    /// TCP exchanges started (forced, or after truncation).
    pub tcp_exchanges: u64,
    /// UDP answers that were truncated and retried over TCP.
    pub truncated: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Attempts that failed otherwise (refused, reset, malformed).
    pub errors: u64,
    /// Datagrams ignored because the ID or question did not match (spoofing attempts or late
    /// answers).
    pub mismatched: u64,
    /// Answers with SERVFAIL, REFUSED or NOTIMP, after which the next server was asked.
    pub failovers: u64,
    /// Questions for which no server gave a usable answer.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queries: AtomicU64,
    udp_exchanges: AtomicU64,
    tcp_exchanges: AtomicU64,
    truncated: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    mismatched: AtomicU64,
    failovers: AtomicU64,
    failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Forwards questions to upstream DNS servers.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use cnikit_dns_autopath::upstream::{Forwarder, ForwarderConfig, Upstream, UpstreamQuery};
/// use cnikit_dns_autopath::RecordType;
///
/// let forwarder = Forwarder::new(ForwarderConfig::new(vec!["127.0.0.1:5353".parse()?]))?;
/// let wire = forwarder.query(&UpstreamQuery::new("example.com".parse()?, RecordType::A)).await?;
/// assert!(wire.len() >= 12);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Forwarder {
    config: ForwarderConfig,
    /// Index of the server that answered last; tried first.
    preferred: AtomicUsize,
    counters: Counters,
}

/// One attempt's failure.
#[derive(Debug)]
enum AttemptError {
    Timeout,
    Io(std::io::Error),
    Malformed(&'static str),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Malformed(what) => f.write_str(what),
        }
    }
}

impl Forwarder {
    /// A forwarder with `config`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when no server is given or a timeout is zero.
    pub fn new(config: ForwarderConfig) -> Result<Self, crate::Error> {
        if config.servers.is_empty() {
            return Err(crate::Error::Config(
                "forwarder: no upstream servers".into(),
            ));
        }
        if config.attempt_timeout.is_zero() || config.total_timeout.is_zero() {
            return Err(crate::Error::Config(
                "forwarder: timeouts must be positive".into(),
            ));
        }
        Ok(Self {
            config,
            preferred: AtomicUsize::new(0),
            counters: Counters::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ForwarderConfig {
        &self.config
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> ForwarderStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ForwarderStats {
            queries: get(&c.queries),
            udp_exchanges: get(&c.udp_exchanges),
            tcp_exchanges: get(&c.tcp_exchanges),
            truncated: get(&c.truncated),
            timeouts: get(&c.timeouts),
            errors: get(&c.errors),
            mismatched: get(&c.mismatched),
            failovers: get(&c.failovers),
            failures: get(&c.failures),
        }
    }

    /// The query message: random ID, RD, CD as asked, EDNS with our payload and the DO bit.
    fn build_query(&self, q: &UpstreamQuery, id: u16) -> Vec<u8> {
        let mut m = Vec::with_capacity(HEADER_LEN + q.name.wire_len() + 4 + wire::OPT_LEN);
        m.extend_from_slice(&id.to_be_bytes());
        let flags = FLAG_RD | if q.checking_disabled { FLAG_CD } else { 0 };
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
        m.extend_from_slice(q.name.as_wire());
        m.extend_from_slice(&q.qtype.0.to_be_bytes());
        m.extend_from_slice(&q.qclass.0.to_be_bytes());
        wire::push_opt(&mut m, self.config.edns_payload, q.dnssec_ok, 0);
        m
    }

    /// True when `reply` answers `query` (ID, QR, the same question).
    fn matches(query: &[u8], reply: &[u8]) -> bool {
        if reply.len() < HEADER_LEN || reply[..2] != query[..2] {
            return false;
        }
        let flags = u16::from_be_bytes([reply[2], reply[3]]);
        if flags & FLAG_QR == 0 || reply[4..6] != [0, 1] {
            return false;
        }
        // The question is the same bytes up to case (we sent it uncompressed; a compliant
        // server echoes it uncompressed too).
        let qlen = query.len() - HEADER_LEN - wire::OPT_LEN;
        reply.get(HEADER_LEN..HEADER_LEN + qlen).is_some_and(|q| {
            let name_len = qlen - 4;
            names_equal_ignore_case(&q[..name_len], &query[HEADER_LEN..HEADER_LEN + name_len])
                && q[name_len..] == query[HEADER_LEN + name_len..HEADER_LEN + qlen]
        })
    }

    async fn udp_exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, AttemptError> {
        bump(&self.counters.udp_exchanges);
        let local: SocketAddr = match server.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // A fresh socket per query: the kernel picks a random source port, and `connect`
        // makes it drop datagrams from any other address or port.
        let socket = UdpSocket::bind(local).await.map_err(AttemptError::Io)?;
        socket.connect(server).await.map_err(AttemptError::Io)?;
        socket.send(query).await.map_err(AttemptError::Io)?;
        let mut buf = vec![0u8; usize::from(self.config.edns_payload).max(512) + 1];
        loop {
            let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => return Err(AttemptError::Timeout),
                Ok(Err(e)) => return Err(AttemptError::Io(e)),
                Ok(Ok(n)) => n,
            };
            if Self::matches(query, &buf[..n]) {
                buf.truncate(n);
                return Ok(buf);
            }
            // Wrong ID or question: a spoofing attempt or a late answer; keep waiting.
            bump(&self.counters.mismatched);
        }
    }

    async fn tcp_exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, AttemptError> {
        bump(&self.counters.tcp_exchanges);
        let exchange = async {
            let mut stream = TcpStream::connect(server).await?;
            stream.set_nodelay(true)?;
            let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
            let mut framed = Vec::with_capacity(query.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(query);
            stream.write_all(&framed).await?;
            loop {
                let len = stream.read_u16().await?;
                let mut reply = vec![0u8; usize::from(len)];
                stream.read_exact(&mut reply).await?;
                if Self::matches(query, &reply) {
                    return Ok::<_, std::io::Error>(Some(reply));
                }
                bump(&self.counters.mismatched);
                if reply.len() < HEADER_LEN {
                    return Ok(None);
                }
            }
        };
        match timeout_at(deadline, exchange).await {
            Err(_) => Err(AttemptError::Timeout),
            Ok(Err(e)) => Err(AttemptError::Io(e)),
            Ok(Ok(None)) => Err(AttemptError::Malformed("malformed TCP reply")),
            Ok(Ok(Some(reply))) => Ok(reply),
        }
    }

    async fn attempt(
        &self,
        server: SocketAddr,
        query: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, AttemptError> {
        if self.config.force_tcp {
            return self.tcp_exchange(server, query, deadline).await;
        }
        let reply = self.udp_exchange(server, query, deadline).await?;
        let truncated = u16::from_be_bytes([reply[2], reply[3]]) & FLAG_TC != 0;
        if truncated && self.config.tcp_fallback {
            bump(&self.counters.truncated);
            return self.tcp_exchange(server, query, deadline).await;
        }
        Ok(reply)
    }
}

#[async_trait::async_trait]
impl Upstream for Forwarder {
    async fn query(&self, q: &UpstreamQuery) -> Result<Vec<u8>, UpstreamError> {
        bump(&self.counters.queries);
        let started = Instant::now();
        let overall = tokio::time::Instant::now() + self.config.total_timeout;
        let servers = &self.config.servers;
        let first = self.preferred.load(Ordering::Relaxed) % servers.len();
        let mut attempts = Vec::new();
        let mut fallback: Option<Vec<u8>> = None;
        for i in 0..servers.len() {
            let index = (first + i) % servers.len();
            let server = servers[index];
            let now = tokio::time::Instant::now();
            if now >= overall {
                break;
            }
            let deadline = (now + self.config.attempt_timeout).min(overall);
            let query = self.build_query(q, rand::random());
            match self.attempt(server, &query, deadline).await {
                Ok(reply) => {
                    let rcode = reply[3] & 0xF;
                    if matches!(rcode, RCODE_SERVFAIL | RCODE_REFUSED | RCODE_NOTIMP) {
                        bump(&self.counters.failovers);
                        attempts.push(format!("{server}: rcode {rcode}"));
                        fallback = Some(reply);
                        continue;
                    }
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(reply);
                }
                Err(e) => {
                    bump(match e {
                        AttemptError::Timeout => &self.counters.timeouts,
                        _ => &self.counters.errors,
                    });
                    attempts.push(format!("{server}: {e}"));
                    // Try another server first next time.
                    self.preferred
                        .store((index + 1) % servers.len(), Ordering::Relaxed);
                }
            }
        }
        if let Some(reply) = fallback {
            // Every server that answered said SERVFAIL/REFUSED: pass the last one on.
            return Ok(reply);
        }
        bump(&self.counters.failures);
        Err(UpstreamError::Failed {
            query: format!("{} {}", q.name, q.qtype),
            elapsed: started.elapsed(),
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordType;

    fn forwarder(servers: Vec<SocketAddr>, attempt_ms: u64, total_ms: u64) -> Forwarder {
        Forwarder::new(ForwarderConfig::new(servers).timeouts(
            Duration::from_millis(attempt_ms),
            Duration::from_millis(total_ms),
        ))
        .unwrap()
    }

    fn q() -> UpstreamQuery {
        UpstreamQuery::new("www.example.test".parse().unwrap(), RecordType::A)
    }

    /// A reply to `query` with `rcode` and optionally TC, echoing the question.
    fn reply_to(query: &[u8], rcode: u8, tc: bool) -> Vec<u8> {
        let r = wire::parse_request(query).unwrap();
        let mut m = query[..r.question_end()].to_vec();
        m[2] |= 0x80 | if tc { 0x02 } else { 0 };
        m[3] = 0x80 | rcode;
        m[10..12].fill(0);
        m
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(Forwarder::new(ForwarderConfig::new(vec![])).is_err());
        let zero = ForwarderConfig::new(vec!["127.0.0.1:53".parse().unwrap()])
            .timeouts(Duration::ZERO, Duration::from_secs(1));
        assert!(Forwarder::new(zero).is_err());
    }

    #[test]
    fn query_carries_edns_do_and_cd() {
        let f = forwarder(vec!["127.0.0.1:53".parse().unwrap()], 100, 100);
        let mut query = q();
        query.dnssec_ok = true;
        query.checking_disabled = true;
        let m = f.build_query(&query, 0xABCD);
        let r = wire::parse_request(&m).unwrap();
        assert_eq!(r.id, 0xABCD);
        assert!(r.dnssec_ok());
        assert!(r.checking_disabled());
        assert_eq!(r.edns.unwrap().payload, 1232);
        let reply = reply_to(&m, 0, false);
        assert!(Forwarder::matches(&m, &reply));
        let mut other_id = reply.clone();
        other_id[1] ^= 1;
        assert!(!Forwarder::matches(&m, &other_id));
        let mut other_type = reply.clone();
        let qtype_at = other_type.len() - 3;
        other_type[qtype_at] = 28;
        assert!(!Forwarder::matches(&m, &other_type));
        let mut upper = reply.clone();
        upper[13] = b'W';
        assert!(Forwarder::matches(&m, &upper));
        let mut not_response = reply;
        not_response[2] &= 0x7F;
        assert!(!Forwarder::matches(&m, &not_response));
    }

    /// A fake upstream on loopback that first sends spoofed replies (wrong ID, wrong question,
    /// right ID from another port), then the real one.
    #[tokio::test]
    async fn ignores_spoofed_replies() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let spoofer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, client) = server.recv_from(&mut buf).unwrap();
            let query = buf[..n].to_vec();
            let good = reply_to(&query, 0, false);
            let mut wrong_id = good.clone();
            wrong_id[0] ^= 0xFF;
            let mut wrong_q = good.clone();
            wrong_q[13] = b'x';
            server.send_to(&wrong_id, client).unwrap();
            server.send_to(&wrong_q, client).unwrap();
            // Right ID, right question, wrong source port: the connected socket drops it.
            let mut poisoned = good.clone();
            poisoned[3] = 0x80 | 3;
            spoofer.send_to(&poisoned, client).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            server.send_to(&good, client).unwrap();
        });
        let f = forwarder(vec![addr], 2000, 2000);
        let reply = f.query(&q()).await.unwrap();
        handle.join().unwrap();
        assert_eq!(reply[3] & 0xF, 0, "the spoofed NXDOMAIN must not win");
        assert_eq!(f.stats().mismatched, 2);
    }

    #[tokio::test]
    async fn fails_over_to_the_next_server_and_remembers_it() {
        // First server: a bound socket that never answers; second answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addrs = vec![silent.local_addr().unwrap(), good.local_addr().unwrap()];
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..2 {
                let (n, client) = good.recv_from(&mut buf).unwrap();
                good.send_to(&reply_to(&buf[..n], 0, false), client)
                    .unwrap();
            }
        });
        let f = forwarder(addrs, 150, 1000);
        let t = Instant::now();
        f.query(&q()).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(f.stats().timeouts, 1);
        // The second query goes straight to the server that answered.
        f.query(&q()).await.unwrap();
        assert_eq!(f.stats().timeouts, 1);
        handle.join().unwrap();
        drop(silent);
    }

    #[tokio::test]
    async fn refused_port_fails_fast_and_total_timeout_bounds_the_wait() {
        // Nothing listens on this port: ICMP port unreachable -> ECONNREFUSED.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let f = forwarder(vec![closed_addr], 1000, 1000);
        let err = f.query(&q()).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Failed { .. }), "{err}");
        assert_eq!(f.stats().errors, 1);
        // Two silent servers and a total budget smaller than two attempts.
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let f = forwarder(
            vec![a.local_addr().unwrap(), b.local_addr().unwrap()],
            300,
            400,
        );
        let t = Instant::now();
        assert!(f.query(&q()).await.is_err());
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(f.stats().failures, 1);
    }

    #[tokio::test]
    async fn servfail_moves_on_and_is_returned_when_nobody_does_better() {
        let bad = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = bad.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, client) = bad.recv_from(&mut buf).unwrap();
            bad.send_to(&reply_to(&buf[..n], 2, false), client).unwrap();
        });
        let f = forwarder(vec![addr], 1000, 1000);
        let reply = f.query(&q()).await.unwrap();
        assert_eq!(reply[3] & 0xF, 2);
        assert_eq!(f.stats().failovers, 1);
        handle.join().unwrap();
    }

    #[tokio::test]
    async fn truncated_udp_answer_is_retried_over_tcp() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = std::net::TcpListener::bind(addr).unwrap();
        let handle = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut buf = [0u8; 2048];
            let (n, client) = udp.recv_from(&mut buf).unwrap();
            udp.send_to(&reply_to(&buf[..n], 0, true), client).unwrap();
            let (mut conn, _) = tcp.accept().unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut query).unwrap();
            // A full answer: the question plus padding that stands for many records.
            let mut full = reply_to(&query, 0, false);
            full.extend_from_slice(&[0u8; 3000]);
            let mut framed = u16::try_from(full.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&full);
            conn.write_all(&framed).unwrap();
        });
        let f = forwarder(vec![addr], 2000, 2000);
        let reply = f.query(&q()).await.unwrap();
        handle.join().unwrap();
        assert!(reply.len() > 3000);
        let s = f.stats();
        assert_eq!((s.udp_exchanges, s.truncated, s.tcp_exchanges), (1, 1, 1));
    }
}
