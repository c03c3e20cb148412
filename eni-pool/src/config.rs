//! The pool's configuration: a serde struct with documented defaults, checked at construction.

use std::{collections::BTreeMap, time::Duration};

use cnikit_cloud_api::InstanceLimits;
use serde::{Deserialize, Serialize};

use crate::{allocation::GatewayRule, error::Error};

/// Low and high idle watermarks and a one-time warm-up target for one kind of resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Watermarks {
    /// Low watermark: below this many idle resources the pool pre-warms (Terway
    /// `min_pool_size`, AWS `WARM_IP_TARGET`).
    pub min_idle: u32,
    /// High watermark: above this many idle resources for `idle_release_after`, the pool gives
    /// the surplus back to the cloud (Terway `max_pool_size`).
    pub max_idle: u32,
    /// A one-time target of resources (in use + idle) when the node first starts (Terway
    /// `ip_warm_up_size`); remembered in the record store, so it runs once per node.
    pub warm_up: u32,
}

impl Watermarks {
    /// Watermarks `[min_idle, max_idle]` without warm-up.
    #[must_use]
    pub fn new(min_idle: u32, max_idle: u32) -> Self {
        Self {
            min_idle,
            max_idle,
            warm_up: 0,
        }
    }

    /// Sets the one-time warm-up target.
    #[must_use]
    pub fn with_warm_up(mut self, warm_up: u32) -> Self {
        self.warm_up = warm_up;
        self
    }
}

impl Default for Watermarks {
    fn default() -> Self {
        Self::new(0, 0)
    }
}

/// Address families handed to pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IpStack {
    /// IPv4 only.
    #[default]
    Ipv4,
    /// IPv4 and IPv6: every pod gets one of each, from the same ENI.
    Dual,
}

/// How a new ENI's vSwitch is chosen among the configured ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VSwitchSelection {
    /// The one with the most free addresses (Terway's `ordered`, which sorts that way).
    #[default]
    MostFree,
    /// The first one in the configured order that is not exhausted.
    Ordered,
}

/// The pool's configuration.
///
/// Every field has a default except the node (`instance_id`, `instance_type`), the
/// `vswitches` and the `security_groups`. Durations are written like `"30s"` or `"5m"`.
///
/// ```
/// let cfg: cnikit_eni_pool::PoolConfig = serde_json::from_str(r#"{
///     "instance_id": "i-1", "instance_type": "ecs.g7.xlarge",
///     "vswitches": ["vsw-a"], "security_groups": ["sg-1"],
///     "shared": { "min_idle": 4, "max_idle": 12 },
///     "cooldown": "20s"
/// }"#).unwrap();
/// assert_eq!(cfg.cooldown, std::time::Duration::from_secs(20));
/// assert_eq!(cfg.shared.max_idle, 12);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// This node's instance id (required).
    pub instance_id: String,
    /// This node's instance type (required): the ENI and address caps come from it.
    pub instance_type: String,
    /// vSwitches new ENIs take addresses from (required; one zone). A full one is skipped for
    /// the next.
    pub vswitches: Vec<String>,
    /// How a new ENI's vSwitch is picked. Default `most_free`.
    pub vswitch_selection: VSwitchSelection,
    /// Security groups of new ENIs (required, at most 10).
    pub security_groups: Vec<String>,
    /// IPv4 only (default) or dual stack.
    pub ip_stack: IpStack,
    /// Watermarks of shared-ENI IPs. Default: `min_idle` 2, `max_idle` 10, no warm-up.
    pub shared: Watermarks,
    /// Watermarks of idle exclusive ENIs. Default: 0 and 0 (create on demand, release once
    /// idle).
    pub exclusive: Watermarks,
    /// Cap on ENIs the pool attaches (shared and exclusive together); default: what the
    /// instance type allows besides the primary ENI.
    pub max_enis: Option<u32>,
    /// Cap on shared IPs (in use + idle + being added), e.g. the node's max pods; default: the
    /// instance type's capacity.
    pub max_ips: Option<u32>,
    /// Hand out secondary IPs of the instance's primary ENI too (AWS does; Alibaba/Terway does
    /// not). Default `false`.
    pub use_primary_eni: bool,
    /// Hand a secondary ENI's own primary address to a pod (Alibaba/Terway on Linux does; AWS
    /// does not). Default `true`. The address is never unassigned either way.
    pub hand_out_eni_primary_ip: bool,
    /// How long a released resource rests before it is handed out again. Default 30 s (as
    /// AWS's `IP_COOLDOWN_PERIOD`).
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// How long an allocation waits for the cloud when the pool is empty before it fails with
    /// [`Error::Exhausted`]. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub allocate_timeout: Duration,
    /// When the pool is empty, demand is gathered until none arrived for this long (at most
    /// ten times this) before the cloud is called, so that pods arriving together share calls.
    /// Default 5 ms (a cloud call takes hundreds).
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
    /// Secondary IPv4 addresses requested with a new ENI, at most (ECS: 49 on an unattached
    /// ENI). Default 49.
    pub max_ips_per_create: u32,
    /// Addresses requested by one assign call, at most. Default 10 (Terway's batch size).
    pub max_ips_per_assign: u32,
    /// Addresses released by one unassign call, at most. Default 10.
    pub max_ips_per_unassign: u32,
    /// ENI creations in flight at once, at most. Default 8.
    pub max_parallel_creates: u32,
    /// Delay before the first look at an attaching ENI (a typical attach time). Default 2 s.
    #[serde(with = "humantime_serde")]
    pub attach_poll_initial: Duration,
    /// Attach polls due within this window of the first one are made together, at the latest
    /// of them: one describe call for ENIs attached at nearly the same time (a burst), at the
    /// cost of up to this much delay for the earliest. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub attach_poll_batch: Duration,
    /// Longest delay between later looks. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub attach_poll_max: Duration,
    /// An ENI still not attached after this is given up and deleted. Default 120 s.
    #[serde(with = "humantime_serde")]
    pub attach_timeout: Duration,
    /// How long start-up keeps retrying throttled or transient cloud errors before it fails.
    /// Default 2 min.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// First retry delay after a throttled or transient cloud error (doubles, with jitter).
    /// Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest retry delay. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts of one cloud call before the operation is given up (and planned again later).
    /// Default 4.
    pub retry_attempts: u32,
    /// How long a vSwitch that ran out of addresses is skipped. Default 10 min (Terway).
    #[serde(with = "humantime_serde")]
    pub exhausted_pause: Duration,
    /// How long a path that hit a quota (ENIs per instance, IPs per ENI, account ENIs) or a
    /// non-retryable error is paused. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub quota_pause: Duration,
    /// Idle resources above `max_idle` are released only after the surplus lasted this long.
    /// Default 1 min.
    #[serde(with = "humantime_serde")]
    pub idle_release_after: Duration,
    /// Resources released per batch, at most. Default 5 (Terway).
    pub release_batch: u32,
    /// Delay between release batches. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub release_interval: Duration,
    /// Jitter of release and GC delays, as a fraction. Default 0.1.
    pub jitter: f64,
    /// Period of GC (liveness of bindings, the cloud's view, leaked ENIs). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// A binding younger than this is never released by GC (the orchestrator may not list the
    /// pod yet). Default 1 min.
    #[serde(with = "humantime_serde")]
    pub liveness_grace: Duration,
    /// A detached ENI carrying this pool's tags is deleted once it is this old (a crash left it
    /// between create and attach, or between detach and delete). Default 5 min (AWS).
    #[serde(with = "humantime_serde")]
    pub leak_grace: Duration,
    /// The value of the `cnikit.io/pool` tag on ENIs this pool creates; ENIs with other values
    /// are never touched. Default `cnikit`.
    pub pool_name: String,
    /// Extra tags on created ENIs.
    pub extra_tags: BTreeMap<String, String>,
    /// Base of route table ids: an ENI at device index `d` uses table `base + d`. Default 1000.
    pub route_table_base: u32,
    /// How a vSwitch's gateway follows from its CIDR. Default: Alibaba's (third from last).
    pub gateway: GatewayRule,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            instance_id: String::new(),
            instance_type: String::new(),
            vswitches: Vec::new(),
            vswitch_selection: VSwitchSelection::default(),
            security_groups: Vec::new(),
            ip_stack: IpStack::default(),
            shared: Watermarks::new(2, 10),
            exclusive: Watermarks::new(0, 0),
            max_enis: None,
            max_ips: None,
            use_primary_eni: false,
            hand_out_eni_primary_ip: true,
            cooldown: Duration::from_secs(30),
            allocate_timeout: Duration::from_secs(60),
            batch_window: Duration::from_millis(5),
            max_ips_per_create: 49,
            max_ips_per_assign: 10,
            max_ips_per_unassign: 10,
            max_parallel_creates: 8,
            attach_poll_initial: Duration::from_secs(2),
            attach_poll_batch: Duration::from_millis(500),
            attach_poll_max: Duration::from_secs(2),
            attach_timeout: Duration::from_secs(120),
            start_timeout: Duration::from_secs(120),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            retry_attempts: 4,
            exhausted_pause: Duration::from_secs(600),
            quota_pause: Duration::from_secs(60),
            idle_release_after: Duration::from_secs(60),
            release_batch: 5,
            release_interval: Duration::from_secs(10),
            jitter: 0.1,
            gc_interval: Duration::from_secs(300),
            liveness_grace: Duration::from_secs(60),
            leak_grace: Duration::from_secs(300),
            pool_name: "cnikit".to_owned(),
            extra_tags: BTreeMap::new(),
            route_table_base: 1000,
            gateway: GatewayRule::default(),
        }
    }
}

/// Tag keys the pool puts on the ENIs it creates.
pub mod tags {
    /// The pool's name ([`crate::PoolConfig::pool_name`]).
    pub const POOL: &str = "cnikit.io/pool";
    /// The instance the ENI was created for.
    pub const INSTANCE: &str = "cnikit.io/instance";
    /// `shared` or `exclusive`.
    pub const ROLE: &str = "cnikit.io/role";
    /// Role value of a shared ENI.
    pub const ROLE_SHARED: &str = "shared";
    /// Role value of an exclusive ENI.
    pub const ROLE_EXCLUSIVE: &str = "exclusive";
}

/// What the instance type and the configuration allow together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capacity {
    /// Secondary ENIs the pool may attach (shared and exclusive together).
    pub enis: u32,
    /// IPv4 addresses per ENI, the ENI's primary included.
    pub ipv4_per_eni: u32,
    /// Pod addresses one shared secondary ENI can carry.
    pub ips_per_shared_eni: u32,
    /// Pod addresses the primary ENI carries when `use_primary_eni` is set.
    pub ips_on_primary_eni: u32,
    /// Shared IPs the pool holds at most (in use + idle + being added).
    pub shared_ips: u32,
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::Config(message()))
    }
}

impl PoolConfig {
    /// A configuration for `instance_id` of `instance_type`, taking addresses from
    /// `vswitches` with `security_groups`; every other field at its default.
    #[must_use]
    pub fn new(
        instance_id: impl Into<String>,
        instance_type: impl Into<String>,
        vswitches: impl IntoIterator<Item = impl Into<String>>,
        security_groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            instance_id: instance_id.into(),
            instance_type: instance_type.into(),
            vswitches: vswitches.into_iter().map(Into::into).collect(),
            security_groups: security_groups.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Parses a JSON configuration and checks what can be checked without the cloud.
    ///
    /// # Errors
    /// [`Error::Config`] on malformed JSON, unknown fields or invalid combinations.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let cfg: Self =
            serde_json::from_str(json).map_err(|e| Error::Config(format!("pool config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what can be checked without knowing the instance type's limits.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first invalid field or combination.
    pub fn validate(&self) -> Result<(), Error> {
        check(!self.instance_id.is_empty(), || {
            "instance_id is required".into()
        })?;
        check(!self.instance_type.is_empty(), || {
            "instance_type is required".into()
        })?;
        check(!self.vswitches.is_empty(), || {
            "vswitches: at least one is required".into()
        })?;
        check(
            !self.security_groups.is_empty() && self.security_groups.len() <= 10,
            || {
                format!(
                    "security_groups: between 1 and 10 are required, {} given",
                    self.security_groups.len()
                )
            },
        )?;
        for (name, w) in [("shared", self.shared), ("exclusive", self.exclusive)] {
            check(w.min_idle <= w.max_idle, || {
                format!(
                    "{name}: min_idle ({}) is above max_idle ({})",
                    w.min_idle, w.max_idle
                )
            })?;
        }
        check(
            (1..=49).contains(&self.max_ips_per_create)
                && (1..=49).contains(&self.max_ips_per_assign)
                && (1..=49).contains(&self.max_ips_per_unassign),
            || "max_ips_per_create/assign/unassign must be within 1..=49".into(),
        )?;
        check(self.max_parallel_creates >= 1, || {
            "max_parallel_creates must be at least 1".into()
        })?;
        check(self.retry_attempts >= 1, || {
            "retry_attempts must be at least 1".into()
        })?;
        check(self.release_batch >= 1, || {
            "release_batch must be at least 1".into()
        })?;
        check(
            self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter),
            || format!("jitter {} is outside [0, 1]", self.jitter),
        )?;
        check(self.retry_base <= self.retry_max, || {
            "retry_base is above retry_max".into()
        })?;
        check(
            !self.attach_poll_max.is_zero() && !self.gc_interval.is_zero(),
            || "attach_poll_max and gc_interval must be positive".into(),
        )?;
        let year = Duration::from_secs(365 * 24 * 3600);
        for (name, d) in [
            ("cooldown", self.cooldown),
            ("allocate_timeout", self.allocate_timeout),
            ("batch_window", self.batch_window),
            ("attach_poll_initial", self.attach_poll_initial),
            ("attach_poll_batch", self.attach_poll_batch),
            ("attach_poll_max", self.attach_poll_max),
            ("attach_timeout", self.attach_timeout),
            ("start_timeout", self.start_timeout),
            ("retry_max", self.retry_max),
            ("exhausted_pause", self.exhausted_pause),
            ("quota_pause", self.quota_pause),
            ("idle_release_after", self.idle_release_after),
            ("release_interval", self.release_interval),
            ("gc_interval", self.gc_interval),
            ("liveness_grace", self.liveness_grace),
            ("leak_grace", self.leak_grace),
        ] {
            check(d <= year, || format!("{name} {d:?} is longer than a year"))?;
        }
        check(!self.pool_name.is_empty(), || {
            "pool_name must not be empty".into()
        })?;
        check(self.extra_tags.len() <= 17, || {
            "extra_tags: at most 17 (the pool adds 3 of the 20 an ENI may carry)".into()
        })?;
        for key in self.extra_tags.keys() {
            check(!key.starts_with("cnikit.io/"), || {
                format!("extra_tags: key {key:?} is reserved for the pool")
            })?;
        }
        Ok(())
    }

    /// Checks the configuration against the instance type's limits and computes the capacity.
    ///
    /// # Errors
    /// [`Error::Config`] when a cap or watermark is above what the instance allows.
    pub fn capacity(&self, limits: &InstanceLimits) -> Result<Capacity, Error> {
        self.validate()?;
        let secondary = limits.max_secondary_enis();
        let enis = match self.max_enis {
            Some(cap) => {
                check(cap <= secondary, || {
                    format!(
                        "max_enis {cap} is above the {secondary} secondary ENIs {} allows",
                        limits.instance_type
                    )
                })?;
                cap
            }
            None => secondary,
        };
        let ipv4_per_eni = limits.ipv4_per_eni;
        check(ipv4_per_eni >= 1, || {
            format!("{} reports no IPv4 address per ENI", limits.instance_type)
        })?;
        let mut per_eni = if self.hand_out_eni_primary_ip {
            ipv4_per_eni
        } else {
            ipv4_per_eni - 1
        };
        let mut on_primary = if self.use_primary_eni {
            ipv4_per_eni - 1
        } else {
            0
        };
        if self.ip_stack == IpStack::Dual {
            check(limits.ipv6_per_eni > 0, || {
                format!(
                    "ip_stack dual: {} allows no IPv6 address per ENI",
                    limits.instance_type
                )
            })?;
            per_eni = per_eni.min(limits.ipv6_per_eni);
            on_primary = on_primary.min(limits.ipv6_per_eni);
        }
        let total = enis.saturating_mul(per_eni).saturating_add(on_primary);
        let shared_ips = match self.max_ips {
            Some(cap) => {
                check(cap <= total, || {
                    format!(
                        "max_ips {cap} is above the {total} shared IPs {} allows",
                        limits.instance_type
                    )
                })?;
                cap
            }
            None => total,
        };
        for (what, v) in [
            ("shared.max_idle", self.shared.max_idle),
            ("shared.warm_up", self.shared.warm_up),
        ] {
            check(v <= shared_ips, || {
                format!("{what} {v} is above the shared IP capacity {shared_ips}")
            })?;
        }
        for (what, v) in [
            ("exclusive.max_idle", self.exclusive.max_idle),
            ("exclusive.warm_up", self.exclusive.warm_up),
        ] {
            check(v <= enis, || {
                format!("{what} {v} is above the ENI capacity {enis}")
            })?;
        }
        Ok(Capacity {
            enis,
            ipv4_per_eni,
            ips_per_shared_eni: per_eni,
            ips_on_primary_eni: on_primary,
            shared_ips,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PoolConfig {
        PoolConfig::new("i-1", "t", ["vsw-1"], ["sg-1"])
    }

    fn limits() -> InstanceLimits {
        InstanceLimits::new("t", 4, 15, 15)
    }

    #[test]
    fn defaults_round_trip_through_json() {
        let c = cfg();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"cooldown\":\"30s\""), "{json}");
        assert_eq!(PoolConfig::from_json(&json).unwrap(), c);
    }

    #[test]
    fn rejects_invalid_combinations() {
        let mut c = cfg();
        c.shared = Watermarks::new(5, 3);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("min_idle (5) is above max_idle (3)"), "{e}");

        let e = PoolConfig::from_json(r#"{"instance_id":"i","bogus":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");

        let mut c = cfg();
        c.max_enis = Some(4);
        let e = c.capacity(&limits()).unwrap_err().to_string();
        assert!(
            e.contains("max_enis 4 is above the 3 secondary ENIs"),
            "{e}"
        );

        let mut c = cfg();
        c.max_ips = Some(46);
        let e = c.capacity(&limits()).unwrap_err().to_string();
        assert!(e.contains("max_ips 46 is above the 45"), "{e}");

        let mut c = cfg();
        c.exclusive = Watermarks::new(0, 4);
        assert!(c.capacity(&limits()).is_err());

        let mut c = cfg();
        c.extra_tags.insert("cnikit.io/pool".into(), "x".into());
        assert!(c.validate().is_err());

        let e = PoolConfig::from_json(
            r#"{"instance_id":"i","instance_type":"t","vswitches":["v"],"security_groups":["s"],"gc_interval":"100000y"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gc_interval"), "{e}");
    }

    #[test]
    fn capacity_follows_primary_ip_policy() {
        let mut c = cfg();
        let cap = c.capacity(&limits()).unwrap();
        assert_eq!(
            (cap.enis, cap.ips_per_shared_eni, cap.shared_ips),
            (3, 15, 45)
        );
        c.hand_out_eni_primary_ip = false;
        c.use_primary_eni = true;
        let cap = c.capacity(&limits()).unwrap();
        assert_eq!(
            (
                cap.ips_per_shared_eni,
                cap.ips_on_primary_eni,
                cap.shared_ips
            ),
            (14, 14, 56)
        );
        c.ip_stack = IpStack::Dual;
        let cap = c.capacity(&InstanceLimits::new("t", 4, 15, 10)).unwrap();
        assert_eq!(cap.ips_per_shared_eni, 10);
        assert!(c.capacity(&InstanceLimits::new("t", 4, 15, 0)).is_err());
    }
}
