//! The provider trait: what an ENI-based CNI needs from a cloud.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use async_trait::async_trait;

use crate::{
    backoff::{WaitOptions, sleep_cancellable},
    error::{Error, Result},
    rand::{SplitMix64, entropy},
    types::{
        AssignIpsRequest, AttachEniRequest, CreateEniRequest, DetachEniRequest, Eni, EniFilter,
        EniStatus, InstanceLimits, Subnet,
    },
};

/// The condition [`CloudProvider::wait_eni`] waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitTarget {
    /// The ENI has this status.
    Status(EniStatus),
    /// The ENI is `InUse` on this instance.
    AttachedTo(String),
    /// The ENI is `Available` (detached).
    Detached,
    /// The ENI no longer exists.
    Deleted,
}

impl WaitTarget {
    /// Whether `eni` (or its absence) satisfies the target.
    #[must_use]
    pub fn reached(&self, eni: Option<&Eni>) -> bool {
        match (self, eni) {
            (Self::Deleted, None) => true,
            (Self::Status(s), Some(e)) => e.status == *s,
            (Self::AttachedTo(i), Some(e)) => {
                e.status == EniStatus::InUse && e.instance_id() == Some(i.as_str())
            }
            (Self::Detached, Some(e)) => e.status == EniStatus::Available,
            _ => false,
        }
    }
}

impl fmt::Display for WaitTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "{s}"),
            Self::AttachedTo(i) => write!(f, "InUse on {i}"),
            Self::Detached => f.write_str("Available"),
            Self::Deleted => f.write_str("deleted"),
        }
    }
}

/// What an ENI-based CNI needs from a cloud: instance limits, subnet capacity, the ENI
/// lifecycle, secondary addresses, listing, and waiting for asynchronous state changes.
///
/// Object safe: hold it as `Arc<dyn CloudProvider>`. Implementations: the Alibaba ECS client
/// ([`crate::ecs::EcsClient`]) and the simulator (`sim::SimCloud`, feature `sim`); the
/// shape also fits AWS EC2 (`DescribeInstanceTypes`, `DescribeSubnets`,
/// `CreateNetworkInterface` with a client token, `AttachNetworkInterface` with a device index,
/// `DetachNetworkInterface` by attachment id, `Assign/UnassignPrivateIpAddresses`,
/// `Assign/UnassignIpv6Addresses`, `DescribeNetworkInterfaces` with filters and paging).
///
/// Semantics every implementation keeps:
/// - Errors carry an [`ErrorKind`](crate::ErrorKind) so callers react the same on any cloud.
/// - `detach_eni`, `delete_eni` and the unassign calls succeed when the ENI (or address) is
///   already gone.
/// - `create_eni` and the assign calls are idempotent under the implementation's own retries;
///   pass a `client_token` to make a retry of yours idempotent too.
/// - List and describe calls return every page.
#[async_trait]
pub trait CloudProvider: Send + Sync + fmt::Debug {
    /// A short name for logs, e.g. `alibaba-ecs` or `ecs-sim`.
    fn name(&self) -> &str;

    /// ENI and address limits of an instance type.
    async fn instance_limits(&self, instance_type: &str) -> Result<InstanceLimits>;

    /// A subnet (vSwitch) with its free address count.
    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet>;

    /// Creates an ENI (status `Available`), with its secondary addresses if asked.
    async fn create_eni(&self, request: &CreateEniRequest) -> Result<Eni>;

    /// Starts attaching an ENI; it is `Attaching` until it becomes `InUse`
    /// (see [`CloudProvider::wait_eni`]).
    async fn attach_eni(&self, request: &AttachEniRequest) -> Result<()>;

    /// Starts detaching an ENI (`Detaching` until `Available`). Succeeds if the ENI is gone.
    async fn detach_eni(&self, request: &DetachEniRequest) -> Result<()>;

    /// Deletes an `Available` ENI. Succeeds if it is already gone.
    async fn delete_eni(&self, eni_id: &str) -> Result<()>;

    /// Assigns secondary private IPv4 addresses; returns the assigned ones.
    async fn assign_ipv4(&self, request: &AssignIpsRequest<Ipv4Addr>) -> Result<Vec<Ipv4Addr>>;

    /// Unassigns secondary private IPv4 addresses. Addresses (or an ENI) already gone are not an
    /// error.
    async fn unassign_ipv4(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Result<()>;

    /// Assigns IPv6 addresses; returns the assigned ones.
    async fn assign_ipv6(&self, request: &AssignIpsRequest<Ipv6Addr>) -> Result<Vec<Ipv6Addr>>;

    /// Unassigns IPv6 addresses. Addresses (or an ENI) already gone are not an error.
    async fn unassign_ipv6(&self, eni_id: &str, ips: &[Ipv6Addr]) -> Result<()>;

    /// Every ENI matching `filter` (all pages).
    async fn describe_enis(&self, filter: &EniFilter) -> Result<Vec<Eni>>;

    /// The ENIs attached to an instance, the primary one included.
    async fn list_instance_enis(&self, instance_id: &str) -> Result<Vec<Eni>> {
        self.describe_enis(&EniFilter::instance(instance_id)).await
    }

    /// One ENI, or `None` if it does not exist (any more).
    async fn describe_eni(&self, eni_id: &str) -> Result<Option<Eni>> {
        let mut found = self.describe_enis(&EniFilter::ids([eni_id])).await?;
        Ok(found
            .iter()
            .position(|e| e.id == eni_id)
            .map(|i| found.swap_remove(i)))
    }

    /// Polls until the ENI reaches `target`, with backoff, bounded by `options.timeout` and
    /// cancellable through `options.cancel` (or by dropping the future).
    ///
    /// Returns the ENI as last described (`None` for [`WaitTarget::Deleted`]). Retryable errors
    /// while polling are absorbed; others end the wait. An ENI that disappears while awaiting a
    /// status gives [`Error::NotFound`]; an attach seen failing (`Attaching` → `Available`)
    /// gives [`Error::StatusRegressed`] at once instead of waiting for the deadline.
    async fn wait_eni(
        &self,
        eni_id: &str,
        target: &WaitTarget,
        options: &WaitOptions,
    ) -> Result<Option<Eni>> {
        poll_eni(self, eni_id, target, options).await
    }
}

/// The polling loop behind [`CloudProvider::wait_eni`], usable by implementations that override
/// it to add their own pre- or post-steps.
///
/// # Errors
/// [`Error::WaitTimeout`], [`Error::Cancelled`], [`Error::NotFound`] or the first
/// non-retryable describe error.
pub async fn poll_eni<P: CloudProvider + ?Sized>(
    provider: &P,
    eni_id: &str,
    target: &WaitTarget,
    options: &WaitOptions,
) -> Result<Option<Eni>> {
    let start = tokio::time::Instant::now();
    let deadline = start + options.timeout;
    let cancel = options.cancel.as_ref();
    let cancelled = || Error::Cancelled {
        operation: format!("waiting for ENI {eni_id} to be {target}"),
    };
    let mut rng = SplitMix64::new(entropy());
    let mut last_seen = String::from("never described");
    let mut saw_attaching = false;
    let awaits_attach = matches!(
        target,
        WaitTarget::AttachedTo(_) | WaitTarget::Status(EniStatus::InUse)
    );
    let initial = options
        .initial_delay
        .min(deadline.saturating_duration_since(start));
    if !sleep_cancellable(initial, cancel).await {
        return Err(cancelled());
    }
    for attempt in 0u32.. {
        match provider.describe_eni(eni_id).await {
            Ok(found) => {
                if target.reached(found.as_ref()) {
                    return Ok(found);
                }
                match found {
                    Some(eni) => {
                        if awaits_attach && saw_attaching && eni.status == EniStatus::Available {
                            return Err(Error::StatusRegressed {
                                eni_id: eni_id.to_owned(),
                                target: target.to_string(),
                                from: EniStatus::Attaching.to_string(),
                                to: eni.status.to_string(),
                            });
                        }
                        saw_attaching |= eni.status == EniStatus::Attaching;
                        last_seen = eni.status.to_string();
                    }
                    None => {
                        return Err(Error::NotFound {
                            what: "ENI",
                            id: eni_id.to_owned(),
                        });
                    }
                }
            }
            Err(e) if e.is_retryable() => {
                tracing::debug!(eni_id, error = %e, "describe failed while waiting; retrying");
                last_seen = format!("error: {e}");
            }
            Err(e) => return Err(e),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        let delay = options
            .poll
            .delay(attempt, rng.next_f64())
            .min(deadline - now);
        if !sleep_cancellable(delay, cancel).await {
            return Err(cancelled());
        }
    }
    Err(Error::WaitTimeout {
        eni_id: eni_id.to_owned(),
        target: target.to_string(),
        elapsed: start.elapsed(),
        last_seen,
    })
}
