//! An ECS-compatible cloud simulator (feature `sim`).
//!
//! One stateful model of a region — instance types with ENI/IP limits, vSwitches with finite
//! CIDRs, ENIs moving `Available` → `Attaching` → `InUse` → `Detaching` → `Available` →
//! `Deleting` with configurable latencies, idempotency tokens, per-action throttling and seeded
//! fault injection — usable two ways over the same state machine:
//!
//! 1. in process: [`SimCloud`] implements [`CloudProvider`] directly (fast enough for pool
//!    property tests and benches), and [`SimMetadata`] implements
//!    [`crate::metadata::InstanceMetadata`];
//! 2. over HTTP: [`HttpSim`] / [`serve`] (and the `ecs-sim` binary) speak the real RPC protocol, verifying
//!    signatures, plus the metadata service under `/latest/`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cnikit_cloud_api::Error> {
//! use cnikit_cloud_api::{CloudProvider, CreateEniRequest, sim::{SimCloud, SimConfig, DEFAULT_VSWITCH, DEFAULT_SECURITY_GROUP}};
//!
//! let cloud = SimCloud::new(SimConfig::instant())?;
//! let eni = cloud
//!     .create_eni(&CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP]).with_secondary_ipv4_count(4))
//!     .await?;
//! assert_eq!(eni.secondary_ipv4.len(), 4);
//! assert_eq!(cloud.calls(cnikit_cloud_api::ecs::Action::CreateNetworkInterface), 1);
//! # Ok(()) }
//! ```

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

mod config;
#[cfg(feature = "aws")]
mod ec2;
mod faults;
mod http;
mod state;

pub use config::{
    DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VPC, DEFAULT_VSWITCH, DEFAULT_VSWITCH_B,
    DEFAULT_VSWITCH_TINY, DEFAULT_ZONE, InstanceSpec, InstanceTypeSpec, LatencyConfig,
    MetadataConfig, MetadataFault, QuotaConfig, SecurityGroupSpec, SimConfig, ThrottleConfig,
    VSwitchSpec, VpcSpec,
};
#[cfg(feature = "aws")]
pub use ec2::{SIM_EC2_MAX_PAGE, SimEc2};
pub use faults::{Fault, FaultRule, GarbageKind};
pub use http::{AccessKey, HttpSim, HttpSimConfig, serve};

use self::{
    faults::ArmedRule,
    state::{SimError, State, sim_err},
};
use crate::{
    CloudProvider,
    ecs::{Action, codes},
    error::{ApiError, Error, Result},
    metadata::{InstanceIdentity, InstanceMetadata, MetadataInterface, normalize_mac},
    rand::SplitMix64,
    ratelimit::{Rate, TokenBucket},
    types::{
        AssignIpsRequest, AttachEniRequest, CreateEniRequest, DetachEniRequest, Eni, EniFilter,
        InstanceLimits, Subnet,
    },
};

/// Counters of one action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionStats {
    /// Calls received (throttled ones included).
    pub calls: u64,
    /// Calls answered with success.
    pub succeeded: u64,
    /// Calls answered with an error (injected ones included, throttling excluded).
    pub failed: u64,
    /// Calls rejected by throttling.
    pub throttled: u64,
    /// Calls whose request or response was dropped.
    pub dropped: u64,
    /// Calls answered with garbage.
    pub garbage: u64,
}

/// Why a simulated call did not answer normally.
#[derive(Debug)]
pub(crate) enum SimFailure {
    Api {
        request_id: String,
        error: SimError,
    },
    Dropped {
        request_id: String,
        committed: bool,
    },
    Garbage {
        request_id: String,
        kind: GarbageKind,
    },
}

impl SimFailure {
    /// The error the in-process provider returns for this failure.
    fn into_error(self, action: Action) -> Error {
        match self {
            Self::Api { request_id, error } => ApiError {
                action: action.as_str().to_owned(),
                kind: codes::classify(&error.code, Some(error.http_status)),
                code: error.code,
                message: error.message,
                request_id: Some(request_id),
                http_status: Some(error.http_status),
            }
            .into(),
            Self::Dropped {
                request_id,
                committed,
            } => Error::Transport {
                action: action.as_str().to_owned(),
                endpoint: "sim://in-process".to_owned(),
                timed_out: true,
                source: format!(
                    "simulated: {} lost (request {request_id})",
                    if committed { "response" } else { "request" }
                )
                .into(),
            },
            Self::Garbage { request_id, kind } => Error::InvalidResponse {
                action: action.as_str().to_owned(),
                http_status: Some(200),
                request_id: Some(request_id),
                detail: format!("simulated garbage body ({kind:?})"),
            },
        }
    }
}

#[derive(Debug)]
struct Control {
    rules: Vec<ArmedRule>,
    rng: SplitMix64,
    throttle: ThrottleConfig,
    buckets: BTreeMap<Action, TokenBucket>,
    stats: BTreeMap<Action, ActionStats>,
    latency: LatencyConfig,
}

impl Control {
    fn bucket(&mut self, action: Action, now: Instant) -> Option<&mut TokenBucket> {
        let rate: Option<Rate> = self
            .throttle
            .per_action
            .get(action.as_str())
            .copied()
            .or(self.throttle.default);
        let rate = rate?;
        Some(
            self.buckets
                .entry(action)
                .or_insert_with(|| TokenBucket::new(rate, now)),
        )
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    control: Mutex<Control>,
    config: SimConfig,
}

/// A successful simulated call.
#[derive(Debug)]
pub(crate) struct Served<T> {
    pub(crate) request_id: String,
    pub(crate) value: T,
}

/// The simulated region, in process. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct SimCloud {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent-enough state for a simulator.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimCloud {
    /// A region built from `config`.
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration is inconsistent (unknown VPC, vSwitch or
    /// instance type, a fault rule naming an unknown action).
    pub fn new(config: SimConfig) -> Result<Self> {
        for rule in &config.faults {
            validate_rule(rule)?;
        }
        for name in config.throttle.per_action.keys() {
            name.parse::<Action>().map_err(Error::Config)?;
        }
        let state = State::new(&config)?;
        let control = Control {
            rules: config.faults.iter().cloned().map(ArmedRule::new).collect(),
            rng: SplitMix64::new(config.seed),
            throttle: config.throttle.clone(),
            buckets: BTreeMap::new(),
            stats: BTreeMap::new(),
            latency: config.latency.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                control: Mutex::new(control),
                config,
            }),
        })
    }

    /// The configuration it was built from (later changes through setters not included).
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Runs one API call through the pipeline every call takes, in process or over HTTP:
    /// count, throttle, decide faults, sleep the latency, settle transitions, apply `op`.
    pub(crate) async fn call<T>(
        &self,
        action: Action,
        op: impl FnOnce(&mut State, Instant, bool) -> Result<T, SimError>,
    ) -> Result<Served<T>, SimFailure> {
        let now = Instant::now();
        let (request_id, fault, latency) = {
            let mut ctl = lock(&self.inner.control);
            let request_id = crate::rand::format_uuid(ctl.rng.next_u64(), ctl.rng.next_u64())
                .to_ascii_uppercase();
            ctl.stats.entry(action).or_default().calls += 1;
            if let Some(bucket) = ctl.bucket(action, now)
                && !bucket.try_take(now)
            {
                ctl.stats.entry(action).or_default().throttled += 1;
                return Err(SimFailure::Api {
                    request_id,
                    error: sim_err(
                        codes::THROTTLING_USER,
                        400,
                        "Request was denied due to user flow control.",
                    ),
                });
            }
            let mut chosen = None;
            let Control { rules, rng, .. } = &mut *ctl;
            for armed in rules.iter_mut() {
                if !armed.rule.applies_to(action) {
                    continue;
                }
                armed.matched += 1;
                if armed.matched <= armed.rule.skip
                    || armed.rule.max_hits.is_some_and(|m| armed.hits >= m)
                {
                    continue;
                }
                if rng.next_f64() < armed.rule.probability {
                    armed.hits += 1;
                    chosen = Some(armed.rule.fault.clone());
                    break;
                }
            }
            let latency = ctl.latency.api
                + ctl
                    .latency
                    .per_action
                    .get(action.as_str())
                    .copied()
                    .unwrap_or_default()
                + match &chosen {
                    Some(Fault::Latency { delay }) => *delay,
                    _ => Duration::ZERO,
                };
            (request_id, chosen, latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let record = |f: fn(&mut ActionStats)| {
            f(lock(&self.inner.control).stats.entry(action).or_default());
        };
        match &fault {
            Some(Fault::Error {
                code,
                message,
                http_status,
            }) => {
                record(|s| s.failed += 1);
                let status = http_status.unwrap_or(match codes::classify(code, None) {
                    crate::ErrorKind::Transient => 500,
                    _ => 400,
                });
                return Err(SimFailure::Api {
                    request_id,
                    error: sim_err(
                        code,
                        status,
                        message
                            .clone()
                            .unwrap_or_else(|| format!("Injected fault: {code}.")),
                    ),
                });
            }
            Some(Fault::DropRequest) => {
                record(|s| s.dropped += 1);
                return Err(SimFailure::Dropped {
                    request_id,
                    committed: false,
                });
            }
            Some(Fault::Garbage { body }) => {
                record(|s| s.garbage += 1);
                return Err(SimFailure::Garbage {
                    request_id,
                    kind: *body,
                });
            }
            _ => {}
        }
        let fail_async = matches!(fault, Some(Fault::FailAsync));
        let result = {
            let now = Instant::now();
            let mut st = lock(&self.inner.state);
            st.settle(now);
            op(&mut st, now, fail_async)
        };
        match result {
            Ok(value) if matches!(fault, Some(Fault::DropResponse)) => {
                record(|s| s.dropped += 1);
                drop(value);
                Err(SimFailure::Dropped {
                    request_id,
                    committed: true,
                })
            }
            Ok(value) => {
                record(|s| s.succeeded += 1);
                Ok(Served { request_id, value })
            }
            Err(error) => {
                record(|s| s.failed += 1);
                Err(SimFailure::Api { request_id, error })
            }
        }
    }

    async fn run<T>(
        &self,
        action: Action,
        op: impl FnOnce(&mut State, Instant, bool) -> Result<T, SimError>,
    ) -> Result<T> {
        self.call(action, op)
            .await
            .map(|s| s.value)
            .map_err(|f| f.into_error(action))
    }

    /// Like [`SimCloud::run`], but an error the provider contract treats as success (ENI or
    /// address already gone) is success.
    async fn run_gone_ok(
        &self,
        action: Action,
        op: impl FnOnce(&mut State, Instant, bool) -> Result<(), SimError>,
    ) -> Result<()> {
        match self.run(action, op).await {
            Err(Error::Api(e)) if codes::is_success_on(action, &e.code) => Ok(()),
            other => other,
        }
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = lock(&self.inner.state);
        st.settle(Instant::now());
        f(&mut st)
    }

    /// Counters of every action called so far.
    #[must_use]
    pub fn stats(&self) -> BTreeMap<Action, ActionStats> {
        lock(&self.inner.control).stats.clone()
    }

    /// Calls of one action so far.
    #[must_use]
    pub fn calls(&self, action: Action) -> u64 {
        lock(&self.inner.control)
            .stats
            .get(&action)
            .map_or(0, |s| s.calls)
    }

    /// Total calls of every action so far.
    #[must_use]
    pub fn total_calls(&self) -> u64 {
        lock(&self.inner.control)
            .stats
            .values()
            .map(|s| s.calls)
            .sum()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        lock(&self.inner.control).stats.clear();
    }

    /// Adds a fault rule (after the configured ones).
    ///
    /// # Errors
    /// When the rule names an unknown action.
    pub fn add_fault(&self, rule: FaultRule) -> Result<()> {
        validate_rule(&rule)?;
        lock(&self.inner.control).rules.push(ArmedRule::new(rule));
        Ok(())
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.inner.control).rules.clear();
    }

    /// Sets (or with `None` removes) the throttling rate of one action.
    pub fn set_throttle(&self, action: Action, rate: Option<Rate>) {
        let mut ctl = lock(&self.inner.control);
        match rate {
            Some(r) => ctl
                .throttle
                .per_action
                .insert(action.as_str().to_owned(), r),
            None => ctl.throttle.per_action.remove(action.as_str()),
        };
        ctl.buckets.remove(&action);
    }

    /// Replaces the latencies (API calls and status transitions).
    pub fn set_latency(&self, latency: LatencyConfig) {
        lock(&self.inner.state).set_latency(latency.clone());
        lock(&self.inner.control).latency = latency;
    }

    /// The ENI as it is now (not counted as an API call).
    #[must_use]
    pub fn eni(&self, eni_id: &str) -> Option<Eni> {
        self.with_state(|st| st.describe_enis(&EniFilter::ids([eni_id])).pop())
    }

    /// Every ENI, sorted by id (not counted as an API call).
    #[must_use]
    pub fn enis(&self) -> Vec<Eni> {
        self.with_state(|st| st.describe_enis(&EniFilter::default()))
    }

    /// Free IPv4 addresses of a vSwitch (not counted as an API call).
    #[must_use]
    pub fn free_ipv4(&self, vswitch_id: &str) -> Option<u64> {
        self.with_state(|st| {
            st.vswitches(Some(vswitch_id), None, None)
                .first()
                .map(|s| s.available_ipv4)
        })
    }

    /// Adds an instance (with its primary ENI); returns the primary ENI's id.
    ///
    /// # Errors
    /// When its type or vSwitch is unknown or the vSwitch is full.
    pub fn add_instance(&self, spec: InstanceSpec) -> Result<String> {
        self.with_state(|st| st.add_instance(spec))
    }

    /// Adds a vSwitch.
    ///
    /// # Errors
    /// When its VPC is unknown.
    pub fn add_vswitch(&self, spec: VSwitchSpec) -> Result<()> {
        self.with_state(|st| st.add_vswitch(spec))
    }

    /// Adds (or replaces) an instance type.
    pub fn add_instance_type(&self, spec: InstanceTypeSpec) {
        self.with_state(|st| st.add_instance_type(spec));
    }

    /// The metadata service of `instance_id`, in process.
    #[must_use]
    pub fn metadata(&self, instance_id: impl Into<String>) -> SimMetadata {
        SimMetadata {
            cloud: self.clone(),
            instance_id: instance_id.into(),
        }
    }

    pub(crate) fn region_id(&self) -> String {
        lock(&self.inner.state).region_id.clone()
    }
}

fn validate_rule(rule: &FaultRule) -> Result<()> {
    if let Some(a) = &rule.action {
        a.parse::<Action>().map_err(Error::Config)?;
    }
    if !(0.0..=1.0).contains(&rule.probability) {
        return Err(Error::Config(format!(
            "fault probability {} is outside [0, 1]",
            rule.probability
        )));
    }
    Ok(())
}

#[async_trait]
impl CloudProvider for SimCloud {
    fn name(&self) -> &str {
        "ecs-sim"
    }

    async fn instance_limits(&self, instance_type: &str) -> Result<InstanceLimits> {
        self.run(Action::DescribeInstanceTypes, |st, _, _| {
            Ok(st.limits(instance_type))
        })
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "instance type",
            id: instance_type.to_owned(),
        })
    }

    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet> {
        self.run(Action::DescribeVSwitches, |st, _, _| {
            Ok(st.vswitches(Some(subnet_id), None, None).pop())
        })
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "vSwitch",
            id: subnet_id.to_owned(),
        })
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> Result<Eni> {
        self.run(Action::CreateNetworkInterface, |st, _, _| {
            st.create_eni(request)
        })
        .await
    }

    async fn attach_eni(&self, request: &AttachEniRequest) -> Result<()> {
        self.run(Action::AttachNetworkInterface, |st, now, fail| {
            st.attach_eni(request, fail, now)
        })
        .await
    }

    async fn detach_eni(&self, request: &DetachEniRequest) -> Result<()> {
        self.run_gone_ok(Action::DetachNetworkInterface, |st, now, _| {
            st.detach_eni(request, now)
        })
        .await
    }

    async fn delete_eni(&self, eni_id: &str) -> Result<()> {
        self.run_gone_ok(Action::DeleteNetworkInterface, |st, now, _| {
            st.delete_eni(eni_id, now)
        })
        .await
    }

    async fn assign_ipv4(&self, request: &AssignIpsRequest<Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
        self.run(Action::AssignPrivateIpAddresses, |st, _, _| {
            st.assign(request)
        })
        .await
    }

    async fn unassign_ipv4(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        self.run_gone_ok(Action::UnassignPrivateIpAddresses, |st, _, _| {
            st.unassign(eni_id, ips)
        })
        .await
    }

    async fn assign_ipv6(&self, request: &AssignIpsRequest<Ipv6Addr>) -> Result<Vec<Ipv6Addr>> {
        self.run(Action::AssignIpv6Addresses, |st, _, _| st.assign(request))
            .await
    }

    async fn unassign_ipv6(&self, eni_id: &str, ips: &[Ipv6Addr]) -> Result<()> {
        self.run_gone_ok(Action::UnassignIpv6Addresses, |st, _, _| {
            st.unassign(eni_id, ips)
        })
        .await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> Result<Vec<Eni>> {
        self.run(Action::DescribeNetworkInterfaces, |st, _, _| {
            Ok(st.describe_enis(filter))
        })
        .await
    }
}

/// The metadata service of one simulated instance, in process.
#[derive(Clone, Debug)]
pub struct SimMetadata {
    cloud: SimCloud,
    instance_id: String,
}

impl SimMetadata {
    fn identity_now(&self) -> Result<InstanceIdentity> {
        self.cloud
            .with_state(|st| st.identity(&self.instance_id))
            .ok_or_else(|| Error::Metadata {
                path: "instance-id".to_owned(),
                http_status: Some(404),
                detail: format!("instance {} does not exist", self.instance_id),
            })
    }
}

#[async_trait]
impl InstanceMetadata for SimMetadata {
    async fn instance_id(&self) -> Result<String> {
        Ok(self.identity_now()?.instance_id)
    }
    async fn instance_type(&self) -> Result<String> {
        Ok(self.identity_now()?.instance_type)
    }
    async fn region_id(&self) -> Result<String> {
        Ok(self.identity_now()?.region_id)
    }
    async fn zone_id(&self) -> Result<String> {
        Ok(self.identity_now()?.zone_id)
    }
    async fn vpc_id(&self) -> Result<String> {
        Ok(self.identity_now()?.vpc_id)
    }
    async fn subnet_id(&self) -> Result<String> {
        Ok(self.identity_now()?.subnet_id)
    }
    async fn primary_mac(&self) -> Result<String> {
        Ok(self.identity_now()?.primary_mac)
    }
    async fn macs(&self) -> Result<Vec<String>> {
        Ok(self
            .cloud
            .with_state(|st| st.metadata_interfaces(&self.instance_id))
            .into_iter()
            .map(|i| i.mac)
            .collect())
    }
    async fn interface(&self, mac: &str) -> Result<MetadataInterface> {
        let mac = normalize_mac(mac);
        self.cloud
            .with_state(|st| st.metadata_interfaces(&self.instance_id))
            .into_iter()
            .find(|i| i.mac == mac)
            .ok_or_else(|| Error::Metadata {
                path: format!("network/interfaces/macs/{mac}/"),
                http_status: Some(404),
                detail: "no such interface".to_owned(),
            })
    }
    async fn interfaces(&self) -> Result<Vec<MetadataInterface>> {
        Ok(self
            .cloud
            .with_state(|st| st.metadata_interfaces(&self.instance_id)))
    }
}
