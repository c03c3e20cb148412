//! A provider wrapper that counts every cloud call by action and outcome.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use async_trait::async_trait;
use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, DetachEniRequest, Eni,
    EniFilter, InstanceLimits, Result, Subnet,
};

use crate::metrics::{CallOutcome, Counters};

/// Delegates the provider's required methods and records each call; the provided ones
/// (`describe_eni`, `list_instance_enis`, `wait_eni`) keep their default bodies, so the calls
/// they make are counted too.
#[derive(Debug)]
pub(crate) struct Metered {
    pub(crate) inner: Arc<dyn CloudProvider>,
    pub(crate) counters: Arc<Counters>,
}

impl Metered {
    fn record<T>(&self, action: &'static str, r: Result<T>) -> Result<T> {
        let outcome = match &r {
            Ok(_) => CallOutcome::Ok,
            Err(e) => CallOutcome::Error(e.kind()),
        };
        self.counters.record_call(action, outcome);
        r
    }
}

#[async_trait]
impl CloudProvider for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn instance_limits(&self, instance_type: &str) -> Result<InstanceLimits> {
        let r = self.inner.instance_limits(instance_type).await;
        self.record("instance_limits", r)
    }
    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet> {
        let r = self.inner.describe_subnet(subnet_id).await;
        self.record("describe_subnet", r)
    }
    async fn create_eni(&self, request: &CreateEniRequest) -> Result<Eni> {
        let r = self.inner.create_eni(request).await;
        self.record("create_eni", r)
    }
    async fn attach_eni(&self, request: &AttachEniRequest) -> Result<()> {
        let r = self.inner.attach_eni(request).await;
        self.record("attach_eni", r)
    }
    async fn detach_eni(&self, request: &DetachEniRequest) -> Result<()> {
        let r = self.inner.detach_eni(request).await;
        self.record("detach_eni", r)
    }
    async fn delete_eni(&self, eni_id: &str) -> Result<()> {
        let r = self.inner.delete_eni(eni_id).await;
        self.record("delete_eni", r)
    }
    async fn assign_ipv4(&self, request: &AssignIpsRequest<Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
        let r = self.inner.assign_ipv4(request).await;
        self.record("assign_ipv4", r)
    }
    async fn unassign_ipv4(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        let r = self.inner.unassign_ipv4(eni_id, ips).await;
        self.record("unassign_ipv4", r)
    }
    async fn assign_ipv6(&self, request: &AssignIpsRequest<Ipv6Addr>) -> Result<Vec<Ipv6Addr>> {
        let r = self.inner.assign_ipv6(request).await;
        self.record("assign_ipv6", r)
    }
    async fn unassign_ipv6(&self, eni_id: &str, ips: &[Ipv6Addr]) -> Result<()> {
        let r = self.inner.unassign_ipv6(eni_id, ips).await;
        self.record("unassign_ipv6", r)
    }
    async fn describe_enis(&self, filter: &EniFilter) -> Result<Vec<Eni>> {
        let r = self.inner.describe_enis(filter).await;
        self.record("describe_enis", r)
    }
}
