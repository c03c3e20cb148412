//! The agent's metrics in the Prometheus text exposition format (version 0.0.4), served on
//! `GET /metrics` by a small HTTP/1.1 listener: pool levels, cloud calls, and latency
//! histograms of the CNI operations as the agent sees them.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cnikit_eni_pool::MetricsSnapshot;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Upper bounds of the latency buckets, in seconds (100 µs to 60 s).
pub const BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// A cumulative latency histogram (Prometheus semantics).
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<HistogramData>,
}

#[derive(Debug, Default, Clone)]
struct HistogramData {
    /// Per bucket (not cumulative), plus one for `+Inf`.
    counts: [u64; BUCKETS_SECONDS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS_SECONDS.len());
        let mut h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        h.counts[i] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// How many observations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let h = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BUCKETS_SECONDS.iter().zip(h.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", h.count);
    }
}

/// The agent's own counters.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// `ADD` as the agent sees it: from `add` (or `allocate`) to the pod's publication.
    pub add: Histogram,
    /// `DEL` as the agent sees it: from `delete` (or `detach`) to the release.
    pub del: Histogram,
    /// Requests served, by outcome.
    pub requests_ok: AtomicU64,
    /// Requests that failed.
    pub requests_failed: AtomicU64,
}

/// Dataplane and DNS figures sampled for one scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Pods wired on this node.
    pub endpoints: usize,
    /// eBPF services programmed.
    pub services: usize,
    /// Endpoints with a policy.
    pub policies: usize,
    /// DNS queries received.
    pub dns_queries: Option<u64>,
}

/// Renders everything in the text format.
#[must_use]
pub fn render(agent: &AgentMetrics, pool: &MetricsSnapshot, gauges: Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let mut gauge = |name: &str, help: &str, rows: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let kinds = [
        ("shared_ip", &pool.shared),
        ("exclusive_eni", &pool.exclusive),
    ];
    for (metric, help, get) in [
        (
            "cnikit_pool_idle",
            "Idle resources ready for pods.",
            (|k: &cnikit_eni_pool::metrics::KindGauges| k.idle) as fn(&_) -> u32,
        ),
        ("cnikit_pool_in_use", "Resources held by pods.", |k| {
            k.in_use
        }),
        (
            "cnikit_pool_cooling",
            "Released resources resting before reuse.",
            |k| k.cooling,
        ),
        (
            "cnikit_pool_being_added",
            "Resources being assigned or attached.",
            |k| k.being_added,
        ),
        (
            "cnikit_pool_waiting",
            "Allocation requests waiting for the cloud.",
            |k| k.waiting,
        ),
        (
            "cnikit_pool_capacity",
            "The most resources the pool may hold.",
            |k| k.capacity,
        ),
    ] {
        let rows: Vec<(String, f64)> = kinds
            .iter()
            .map(|(kind, k)| (format!("kind=\"{kind}\""), f64::from(get(k))))
            .collect();
        let rows: Vec<(&str, f64)> = rows.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        gauge(metric, help, &rows);
    }
    gauge(
        "cnikit_pool_enis_ready",
        "ENIs attached and usable.",
        &[("", f64::from(pool.enis.ready))],
    );
    gauge(
        "cnikit_endpoints",
        "Pods wired on this node.",
        &[("", gauges.endpoints as f64)],
    );
    gauge(
        "cnikit_dataplane_services",
        "eBPF services programmed.",
        &[("", gauges.services as f64)],
    );
    gauge(
        "cnikit_dataplane_policies",
        "Endpoints with a network policy.",
        &[("", gauges.policies as f64)],
    );
    let _ = writeln!(
        out,
        "# HELP cnikit_cloud_calls_total Cloud API calls by action and outcome.\n# TYPE cnikit_cloud_calls_total counter"
    );
    for ((action, outcome), n) in &pool.cloud_calls {
        let _ = writeln!(
            out,
            "cnikit_cloud_calls_total{{action=\"{action}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP cnikit_pool_allocations_total Allocations served.\n# TYPE cnikit_pool_allocations_total counter\ncnikit_pool_allocations_total {}",
        pool.allocations
    );
    let _ = writeln!(
        out,
        "# HELP cnikit_pool_allocation_failures_total Allocations failed.\n# TYPE cnikit_pool_allocation_failures_total counter\ncnikit_pool_allocation_failures_total {}",
        pool.allocation_failures
    );
    let ok = agent.requests_ok.load(Ordering::Relaxed);
    let failed = agent.requests_failed.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP cnikit_agent_requests_total Plugin requests by outcome.\n# TYPE cnikit_agent_requests_total counter\ncnikit_agent_requests_total{{outcome=\"ok\"}} {ok}\ncnikit_agent_requests_total{{outcome=\"error\"}} {failed}"
    );
    if let Some(q) = gauges.dns_queries {
        let _ = writeln!(
            out,
            "# HELP cnikit_dns_queries_total DNS queries received.\n# TYPE cnikit_dns_queries_total counter\ncnikit_dns_queries_total {q}"
        );
    }
    for (name, help, h) in [
        (
            "cnikit_cni_add_duration_seconds",
            "CNI ADD in the agent, from allocate to wired.",
            &agent.add,
        ),
        (
            "cnikit_cni_del_duration_seconds",
            "CNI DEL in the agent, from detach to release.",
            &agent.del,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        h.render(&mut out, name, "");
    }
    out
}

/// Serves `GET /metrics` on `listener` with what `scrape` returns; anything else is a 404.
/// Each connection gets one response and is closed; requests are bounded (8 KiB, 5 s).
pub async fn serve(listener: TcpListener, scrape: impl Fn() -> String + Send + Sync + 'static) {
    let scrape = std::sync::Arc::new(scrape);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let scrape = std::sync::Arc::clone(&scrape);
        tokio::spawn(async move {
            let mut buf = vec![0_u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let (status, body) =
                if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                    ("200 OK", scrape())
                } else {
                    ("404 Not Found", "not found; try /metrics\n".to_owned())
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(response.as_bytes()).await.is_ok() {
                stream.shutdown().await.ok();
            }
        });
    }
}

/// Binds the metrics listener.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_text_is_well_formed() {
        let m = AgentMetrics::default();
        m.add.observe(Duration::from_micros(50));
        m.add.observe(Duration::from_millis(3));
        m.add.observe(Duration::from_secs(100));
        let text = render(&m, &MetricsSnapshot::default(), Gauges::default());
        assert!(
            text.contains("cnikit_cni_add_duration_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cnikit_cni_add_duration_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cnikit_cni_add_duration_seconds_bucket{le=\"60\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cnikit_cni_add_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("cnikit_cni_add_duration_seconds_count 3"),
            "{text}"
        );
        assert!(
            text.contains("cnikit_pool_idle{kind=\"shared_ip\"} 0"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
