//! `cnikit-agent-audited`: `cnikit-agent` with one layer swapped. Its cloud provider is wrapped
//! in [`Audited`], which appends one JSON line per call that changes the cloud (create, attach,
//! assign, unassign, detach, delete ENIs) to the file named by `CNIKIT_AUDIT_LOG` — a
//! compliance trail — and delegates everything to the configured provider. Everything else
//! (pool, plugin protocol, wiring, dataplane, DNS) is the stock agent's.
//!
//! The walk-through is docs/build-your-own-cni.md.

use std::{
    io::Write,
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, DetachEniRequest, Eni,
    EniFilter, InstanceLimits, Result, Subnet,
};
use cnikit_examples::agent::{cli::cli_main_with, cloud::Cloud};

/// A provider that records every mutating call before making it.
#[derive(Debug)]
struct Audited {
    inner: Arc<dyn CloudProvider>,
    log: Mutex<Option<std::fs::File>>,
}

impl Audited {
    fn record(&self, action: &str, detail: &serde_json::Value) {
        let line = serde_json::json!({ "action": action, "detail": detail });
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = log.as_mut()
            && let Err(e) = writeln!(file, "{line}")
        {
            tracing::warn!(error = %e, "audit log");
        }
    }
}

#[async_trait]
impl CloudProvider for Audited {
    fn name(&self) -> &str {
        "audited"
    }
    async fn instance_limits(&self, t: &str) -> Result<InstanceLimits> {
        self.inner.instance_limits(t).await
    }
    async fn describe_subnet(&self, s: &str) -> Result<Subnet> {
        self.inner.describe_subnet(s).await
    }
    async fn create_eni(&self, r: &CreateEniRequest) -> Result<Eni> {
        let eni = self.inner.create_eni(r).await?;
        self.record("create_eni", &serde_json::json!({ "eni": eni.id }));
        Ok(eni)
    }
    async fn attach_eni(&self, r: &AttachEniRequest) -> Result<()> {
        self.record("attach_eni", &serde_json::json!({ "eni": r.eni_id }));
        self.inner.attach_eni(r).await
    }
    async fn detach_eni(&self, r: &DetachEniRequest) -> Result<()> {
        self.record("detach_eni", &serde_json::json!({ "eni": r.eni_id }));
        self.inner.detach_eni(r).await
    }
    async fn delete_eni(&self, id: &str) -> Result<()> {
        self.record("delete_eni", &serde_json::json!({ "eni": id }));
        self.inner.delete_eni(id).await
    }
    async fn assign_ipv4(&self, r: &AssignIpsRequest<Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
        let ips = self.inner.assign_ipv4(r).await?;
        self.record(
            "assign_ipv4",
            &serde_json::json!({ "eni": r.eni_id, "ips": ips }),
        );
        Ok(ips)
    }
    async fn unassign_ipv4(&self, id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        self.record(
            "unassign_ipv4",
            &serde_json::json!({ "eni": id, "ips": ips }),
        );
        self.inner.unassign_ipv4(id, ips).await
    }
    async fn assign_ipv6(&self, r: &AssignIpsRequest<Ipv6Addr>) -> Result<Vec<Ipv6Addr>> {
        let ips = self.inner.assign_ipv6(r).await?;
        self.record(
            "assign_ipv6",
            &serde_json::json!({ "eni": r.eni_id, "ips": ips }),
        );
        Ok(ips)
    }
    async fn unassign_ipv6(&self, id: &str, ips: &[Ipv6Addr]) -> Result<()> {
        self.record(
            "unassign_ipv6",
            &serde_json::json!({ "eni": id, "ips": ips }),
        );
        self.inner.unassign_ipv6(id, ips).await
    }
    async fn describe_enis(&self, f: &EniFilter) -> Result<Vec<Eni>> {
        self.inner.describe_enis(f).await
    }
}

fn audited(mut cloud: Cloud) -> Cloud {
    let log = std::env::var_os("CNIKIT_AUDIT_LOG").and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    cloud.provider = Arc::new(Audited {
        inner: cloud.provider,
        log: Mutex::new(log),
    });
    cloud
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    cli_main_with(&args, audited)
}
