//! The pool's in-memory model: ENIs and their address units, pods, waiters, cool-down.
//!
//! Everything here is synchronous and runs under one mutex; cloud calls and record commits
//! happen outside it. A *unit* is what one pod gets: an IPv4 address (with its IPv6 partner in
//! dual stack) on a shared ENI, or a whole exclusive ENI (keyed by its primary address).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use cnikit_cloud_api::Eni;
use ipnetwork::{Ipv4Network, Ipv6Network};
use tokio::{
    sync::{Notify, oneshot},
    time::Instant,
};

use crate::{
    allocation::{Allocation, ResourceId},
    config::{Capacity, IpStack, PoolConfig},
    error::Blocker,
    metrics::{EniGauges, KindGauges, MetricsSnapshot},
    pod::{PodKey, ResourceKind},
};

/// Index of a kind in per-kind arrays.
pub(crate) fn ki(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::SharedIp => 0,
        ResourceKind::ExclusiveEni => 1,
    }
}

pub(crate) const KINDS: [ResourceKind; 2] = [ResourceKind::SharedIp, ResourceKind::ExclusiveEni];

/// Where a unit is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UnitState {
    /// Not usable yet: its ENI is attaching, or (dual stack) its IPv6 partner is missing.
    Pending,
    /// Ready to hand out.
    Idle,
    /// Released; usable again at `until`.
    Cooling { until: Instant },
    /// Handed to an allocation whose record is being committed.
    Reserved(PodKey),
    /// Bound to a pod.
    InUse(PodKey),
    /// Being given back to the cloud.
    Releasing,
}

/// One pod's worth of addresses.
#[derive(Clone, Debug)]
pub(crate) struct Unit {
    pub(crate) v6: Option<Ipv6Addr>,
    pub(crate) state: UnitState,
    /// The store holds a cooling record for it.
    pub(crate) cooling_record: bool,
}

impl Unit {
    pub(crate) fn new(v6: Option<Ipv6Addr>, state: UnitState) -> Self {
        Self {
            v6,
            state,
            cooling_record: false,
        }
    }
}

/// What the pool uses an ENI for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Secondary ENI whose addresses go to pods.
    Shared,
    /// Secondary ENI handed whole to one pod.
    Exclusive,
    /// The instance's primary ENI, whose secondary addresses go to pods (`use_primary_eni`).
    Primary,
}

impl Role {
    pub(crate) fn kind(self) -> ResourceKind {
        match self {
            Self::Shared | Self::Primary => ResourceKind::SharedIp,
            Self::Exclusive => ResourceKind::ExclusiveEni,
        }
    }
}

/// Where an ENI is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created; being attached. `next_poll` is set once the attach call was accepted.
    Attaching {
        since: Instant,
        next_poll: Option<Instant>,
        interval: Duration,
        attach_attempts: u32,
    },
    /// Attached and usable.
    Ready,
    /// Being detached and deleted.
    Releasing,
}

/// One ENI the pool manages.
#[derive(Clone, Debug)]
pub(crate) struct EniSlot {
    pub(crate) id: String,
    pub(crate) mac: String,
    pub(crate) vswitch_id: String,
    pub(crate) device_index: Option<u32>,
    pub(crate) role: Role,
    pub(crate) phase: Phase,
    pub(crate) primary_ip: Ipv4Addr,
    /// Shared: the pod-usable IPv4 addresses; exclusive: one unit keyed by the primary address.
    pub(crate) units: BTreeMap<Ipv4Addr, Unit>,
    /// IPv6 addresses not paired with a unit yet (dual stack).
    pub(crate) spare_v6: Vec<Ipv6Addr>,
    /// IPv4 addresses on the ENI that are not units (the node's own, or a kept-back primary).
    pub(crate) other_v4: u32,
    /// Idle units of a ready shared ENI, oldest first.
    pub(crate) idle: VecDeque<Ipv4Addr>,
    /// An operation (assign, unassign, detach) is in flight.
    pub(crate) busy: bool,
    pub(crate) in_flight_v4: u32,
    pub(crate) in_flight_v6: u32,
    pub(crate) ip_limit: u32,
    pub(crate) v6_limit: u32,
    pub(crate) paused_until: Option<Instant>,
    pub(crate) failures: u32,
    /// Bumped whenever the address set or phase changes (GC skips ENIs that changed while it
    /// looked at the cloud).
    pub(crate) epoch: u64,
}

impl EniSlot {
    /// A slot for `eni` with its addresses as units in state `state` (for exclusive ENIs: the
    /// primary address as the one unit).
    pub(crate) fn from_eni(
        eni: &Eni,
        role: Role,
        phase: Phase,
        state: &UnitState,
        cfg: &PoolConfig,
        cap: &Capacity,
        v6_limit: u32,
    ) -> Self {
        let primary_ip = eni.primary_ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut slot = Self {
            id: eni.id.clone(),
            mac: eni.mac.clone(),
            vswitch_id: eni.subnet_id.clone(),
            device_index: eni.attachment.as_ref().and_then(|a| a.device_index),
            role,
            phase,
            primary_ip,
            units: BTreeMap::new(),
            spare_v6: eni.ipv6.clone(),
            other_v4: 0,
            idle: VecDeque::new(),
            busy: false,
            in_flight_v4: 0,
            in_flight_v6: 0,
            ip_limit: cap.ipv4_per_eni,
            v6_limit,
            paused_until: None,
            failures: 0,
            epoch: 0,
        };
        match role {
            Role::Exclusive => {
                slot.units
                    .insert(primary_ip, Unit::new(None, state.clone()));
                slot.other_v4 = u32::try_from(eni.secondary_ipv4.len()).unwrap_or(u32::MAX);
            }
            Role::Shared | Role::Primary => {
                let primary_is_unit = role == Role::Shared && cfg.hand_out_eni_primary_ip;
                if primary_is_unit {
                    slot.units
                        .insert(primary_ip, Unit::new(None, state.clone()));
                } else {
                    slot.other_v4 = 1;
                }
                for ip in &eni.secondary_ipv4 {
                    slot.units.insert(*ip, Unit::new(None, state.clone()));
                }
            }
        }
        slot.pair_v6(cfg.ip_stack);
        slot
    }

    /// IPv4 addresses on the ENI, counting those being assigned.
    pub(crate) fn v4_count(&self) -> u32 {
        u32::try_from(self.units.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.other_v4)
            .saturating_add(self.in_flight_v4)
    }

    /// IPv4 addresses that can still be assigned.
    pub(crate) fn room(&self) -> u32 {
        self.ip_limit.saturating_sub(self.v4_count())
    }

    pub(crate) fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    /// Ready, nothing in flight, not paused.
    pub(crate) fn available_for_ops(&self, now: Instant) -> bool {
        self.phase == Phase::Ready && !self.busy && !self.paused(now)
    }

    /// Units of this ENI counted by state.
    pub(crate) fn count(&self, pred: impl Fn(&UnitState) -> bool) -> u32 {
        u32::try_from(self.units.values().filter(|u| pred(&u.state)).count()).unwrap_or(u32::MAX)
    }

    /// Units without an IPv6 partner (dual stack).
    pub(crate) fn unpaired(&self) -> u32 {
        u32::try_from(self.units.values().filter(|u| u.v6.is_none()).count()).unwrap_or(u32::MAX)
    }

    /// Pairs spare IPv6 addresses with units lacking one; in dual stack, makes units whose
    /// partner arrived usable (on a ready ENI).
    pub(crate) fn pair_v6(&mut self, stack: IpStack) {
        if stack != IpStack::Dual && self.role != Role::Exclusive {
            return;
        }
        for unit in self.units.values_mut() {
            if unit.v6.is_none() {
                match self.spare_v6.pop() {
                    Some(v6) => unit.v6 = Some(v6),
                    None => break,
                }
            }
        }
    }

    /// Whether a unit may be handed out (dual stack needs the IPv6 partner).
    fn complete(unit: &Unit, stack: IpStack, role: Role) -> bool {
        stack == IpStack::Ipv4 || role == Role::Exclusive || unit.v6.is_some()
    }

    /// Turns pending units into idle ones once the ENI is ready and (dual stack) the unit is
    /// paired. Returns how many became idle.
    pub(crate) fn activate(&mut self, stack: IpStack) -> Vec<Ipv4Addr> {
        let mut activated = Vec::new();
        if self.phase != Phase::Ready {
            return activated;
        }
        let role = self.role;
        for (ip, unit) in &mut self.units {
            if unit.state == UnitState::Pending && Self::complete(unit, stack, role) {
                unit.state = UnitState::Idle;
                activated.push(*ip);
            }
        }
        if role != Role::Exclusive {
            self.idle.extend(activated.iter().copied());
        }
        if !activated.is_empty() {
            self.epoch += 1;
        }
        activated
    }
}

/// A pod's entry.
#[derive(Clone, Debug)]
pub(crate) enum PodEntry {
    /// An allocate or release for this key is in progress; wait on the notify and look again.
    Busy(Arc<Notify>),
    /// Bound, since the given time (milliseconds since the Unix epoch).
    Bound(Arc<Allocation>, u64),
}

/// An allocation waiting for the cloud.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) pod: PodKey,
    pub(crate) tx: oneshot::Sender<Allocation>,
}

/// What the pool knows of a vSwitch.
#[derive(Clone, Debug)]
pub(crate) struct SubnetInfo {
    pub(crate) cidr: Ipv4Network,
    pub(crate) ipv6_cidr: Option<Ipv6Network>,
    pub(crate) gateway: Ipv4Addr,
    /// Free addresses as last described, minus what the pool took since.
    pub(crate) free: u64,
}

/// A detached ENI carrying this pool's tags that no slot accounts for.
#[derive(Clone, Debug)]
pub(crate) struct Orphan {
    /// When it becomes deletable.
    pub(crate) delete_after: Instant,
    /// It is attached (to this instance) and must be detached first.
    pub(crate) attached: bool,
    /// A delete is in flight.
    pub(crate) busy: bool,
}

/// The whole model.
#[derive(Debug)]
pub(crate) struct PoolState {
    pub(crate) cfg: Arc<PoolConfig>,
    pub(crate) cap: Capacity,
    pub(crate) v6_limit: u32,
    pub(crate) subnets: BTreeMap<String, SubnetInfo>,
    pub(crate) enis: BTreeMap<String, EniSlot>,
    pub(crate) pods: HashMap<PodKey, PodEntry>,
    pub(crate) waiters: [VecDeque<Waiter>; 2],
    pub(crate) cooling: BTreeSet<(Instant, ResourceId)>,
    pub(crate) idle_exclusive: VecDeque<String>,
    /// Units being created (shared: addresses; exclusive: ENIs).
    pub(crate) creating: [u32; 2],
    pub(crate) creates_in_flight: u32,
    pub(crate) create_paused_until: Option<Instant>,
    pub(crate) create_failures: u32,
    pub(crate) vswitch_paused: BTreeMap<String, Instant>,
    pub(crate) orphans: BTreeMap<String, Orphan>,
    pub(crate) blocker: Option<Blocker>,
    pub(crate) warm_up_pending: [bool; 2],
    pub(crate) surplus_since: [Option<Instant>; 2],
    pub(crate) next_release_at: [Instant; 2],
    pub(crate) next_gc_at: Instant,
    pub(crate) gc_running: bool,
    pub(crate) poll_in_flight: bool,
    pub(crate) next_waiter_id: u64,
    /// Operations decided outside planning (rollbacks), started at the next plan.
    pub(crate) queued: Vec<crate::plan::Op>,
    /// Node-wide facts as recorded.
    pub(crate) meta: crate::store::PoolMeta,
    pub(crate) rng: fastrand::Rng,
}

impl PoolState {
    pub(crate) fn new(
        cfg: Arc<PoolConfig>,
        cap: Capacity,
        v6_limit: u32,
        subnets: BTreeMap<String, SubnetInfo>,
        now: Instant,
        seed: u64,
    ) -> Self {
        let gc_in = cfg.gc_interval;
        Self {
            cfg,
            cap,
            v6_limit,
            subnets,
            enis: BTreeMap::new(),
            pods: HashMap::new(),
            waiters: [VecDeque::new(), VecDeque::new()],
            cooling: BTreeSet::new(),
            idle_exclusive: VecDeque::new(),
            creating: [0, 0],
            creates_in_flight: 0,
            create_paused_until: None,
            create_failures: 0,
            vswitch_paused: BTreeMap::new(),
            orphans: BTreeMap::new(),
            blocker: None,
            warm_up_pending: [false, false],
            surplus_since: [None, None],
            next_release_at: [now, now],
            next_gc_at: now + gc_in,
            gc_running: false,
            poll_in_flight: false,
            next_waiter_id: 0,
            queued: Vec::new(),
            meta: crate::store::PoolMeta::default(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Makes an ENI's pending units idle once it is ready (and, dual stack, paired).
    pub(crate) fn activate(&mut self, id: &str) {
        let stack = self.cfg.ip_stack;
        let Some(slot) = self.enis.get_mut(id) else {
            return;
        };
        let role = slot.role;
        if !slot.activate(stack).is_empty() && role == Role::Exclusive {
            self.idle_exclusive.push_back(id.to_owned());
        }
    }

    /// `d` with the configured jitter applied (uniform in `[d × (1 − j), d × (1 + j)]`).
    pub(crate) fn jittered(&mut self, d: Duration) -> Duration {
        let j = self.cfg.jitter;
        let factor = (1.0 - j + 2.0 * j * self.rng.f64()).max(0.0);
        Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
    }

    /// Makes cooled-down units idle.
    pub(crate) fn promote_cooled(&mut self, now: Instant) {
        while self.cooling.first().is_some_and(|(until, _)| *until <= now) {
            let Some((until, res)) = self.cooling.pop_first() else {
                break;
            };
            let Some((id, ip, _)) = self.locate(&res) else {
                continue;
            };
            let cooling = self
                .enis
                .get(&id)
                .and_then(|s| s.units.get(&ip))
                .is_some_and(|u| u.state == UnitState::Cooling { until });
            if cooling {
                self.make_idle(&id, ip, false);
            }
        }
    }

    /// The earliest end of a cool-down.
    pub(crate) fn next_cooling_end(&self) -> Option<Instant> {
        self.cooling.first().map(|(t, _)| *t)
    }

    /// Idle units ready to hand out.
    pub(crate) fn idle(&self, kind: ResourceKind) -> u32 {
        match kind {
            ResourceKind::SharedIp => self
                .enis
                .values()
                .map(|s| u32::try_from(s.idle.len()).unwrap_or(u32::MAX))
                .sum(),
            ResourceKind::ExclusiveEni => {
                u32::try_from(self.idle_exclusive.len()).unwrap_or(u32::MAX)
            }
        }
    }

    /// Builds the allocation of unit `ip` of `slot` for `pod`.
    pub(crate) fn allocation(&self, slot: &EniSlot, ip: Ipv4Addr, pod: &PodKey) -> Allocation {
        let subnet = self.subnets.get(&slot.vswitch_id);
        let unit_v6 = slot.units.get(&ip).and_then(|u| u.v6);
        let v6 = match slot.role {
            Role::Exclusive => unit_v6.or_else(|| slot.spare_v6.first().copied()),
            Role::Shared | Role::Primary => unit_v6,
        };
        Allocation {
            pod: pod.clone(),
            kind: slot.role.kind(),
            ipv4: ip,
            ipv6: if self.cfg.ip_stack == IpStack::Dual {
                v6
            } else {
                None
            },
            eni_id: slot.id.clone(),
            mac: slot.mac.clone(),
            device_index: slot.device_index,
            vswitch_id: slot.vswitch_id.clone(),
            vswitch_cidr: subnet.map_or_else(|| Ipv4Network::from(ip), |s| s.cidr),
            vswitch_ipv6_cidr: subnet.and_then(|s| s.ipv6_cidr),
            gateway: subnet.map_or(Ipv4Addr::UNSPECIFIED, |s| s.gateway),
            route_table_id: self
                .cfg
                .route_table_base
                .saturating_add(slot.device_index.unwrap_or(0)),
        }
    }

    /// Takes an idle unit of `kind` for `pod`: fullest shared ENI first (so emptier ones can
    /// be released), the longest-idle unit on it.
    pub(crate) fn reserve(&mut self, kind: ResourceKind, pod: &PodKey) -> Option<Allocation> {
        let (eni_id, ip) = match kind {
            ResourceKind::SharedIp => {
                let slot = self
                    .enis
                    .values()
                    .filter(|s| !s.idle.is_empty())
                    .max_by_key(|s| {
                        (
                            s.units.len().saturating_sub(s.idle.len()),
                            std::cmp::Reverse(s.id.clone()),
                        )
                    })?;
                let id = slot.id.clone();
                let slot = self.enis.get_mut(&id)?;
                let ip = slot.idle.pop_front()?;
                (id, ip)
            }
            ResourceKind::ExclusiveEni => loop {
                let id = self.idle_exclusive.pop_front()?;
                if let Some(slot) = self.enis.get(&id)
                    && slot.units.get(&slot.primary_ip).map(|u| &u.state) == Some(&UnitState::Idle)
                {
                    break (id, slot.primary_ip);
                }
            },
        };
        let slot = self.enis.get_mut(&eni_id)?;
        let unit = slot.units.get_mut(&ip)?;
        debug_assert_eq!(unit.state, UnitState::Idle);
        unit.state = UnitState::Reserved(pod.clone());
        let slot = self.enis.get(&eni_id)?;
        Some(self.allocation(slot, ip, pod))
    }

    /// The ENI id, unit address and role of a resource, if its unit exists.
    fn locate(&self, res: &ResourceId) -> Option<(String, Ipv4Addr, Role)> {
        let slot = self.enis.get(res.eni_id())?;
        let ip = match res {
            ResourceId::Ip { ip, .. } => *ip,
            ResourceId::Eni { .. } => slot.primary_ip,
        };
        slot.units
            .contains_key(&ip)
            .then(|| (slot.id.clone(), ip, slot.role))
    }

    /// The state of a resource's unit, if it exists.
    pub(crate) fn unit_state(&self, res: &ResourceId) -> Option<&UnitState> {
        let (id, ip, _) = self.locate(res)?;
        self.enis.get(&id)?.units.get(&ip).map(|u| &u.state)
    }

    /// Whether a cooling record exists for the resource's unit.
    pub(crate) fn has_cooling_record(&self, res: &ResourceId) -> bool {
        self.locate(res).is_some_and(|(id, ip, _)| {
            self.enis
                .get(&id)
                .and_then(|s| s.units.get(&ip))
                .is_some_and(|u| u.cooling_record)
        })
    }

    /// Puts a unit back in line (idle at the front, or pending when its ENI is not ready).
    fn make_idle(&mut self, id: &str, ip: Ipv4Addr, front: bool) {
        let Some(slot) = self.enis.get_mut(id) else {
            return;
        };
        let ready = slot.phase == Phase::Ready;
        let role = slot.role;
        let Some(unit) = slot.units.get_mut(&ip) else {
            return;
        };
        if !ready {
            unit.state = UnitState::Pending;
            return;
        }
        unit.state = UnitState::Idle;
        match (role, front) {
            (Role::Exclusive, true) => self.idle_exclusive.push_front(id.to_owned()),
            (Role::Exclusive, false) => self.idle_exclusive.push_back(id.to_owned()),
            (_, true) => slot.idle.push_front(ip),
            (_, false) => slot.idle.push_back(ip),
        }
    }

    /// Takes a unit out of the idle lines.
    fn take_out_of_line(&mut self, id: &str, ip: Ipv4Addr, role: Role) {
        if let Some(slot) = self.enis.get_mut(id) {
            slot.idle.retain(|i| *i != ip);
        }
        if role == Role::Exclusive {
            self.idle_exclusive.retain(|i| i != id);
        }
    }

    /// Binds an idle (or pending) unit to `pod` directly (restoring a record at start).
    /// Returns the pod already holding it, if any.
    pub(crate) fn claim(&mut self, res: &ResourceId, pod: &PodKey) -> Result<(), Option<PodKey>> {
        let (id, ip, role) = self.locate(res).ok_or(None)?;
        let Some(unit) = self.enis.get_mut(&id).and_then(|s| s.units.get_mut(&ip)) else {
            return Err(None);
        };
        let cooled = match &unit.state {
            UnitState::InUse(other) | UnitState::Reserved(other) => {
                return Err(Some(other.clone()));
            }
            UnitState::Cooling { until } => Some(*until),
            UnitState::Idle | UnitState::Pending | UnitState::Releasing => None,
        };
        unit.state = UnitState::InUse(pod.clone());
        if let Some(until) = cooled {
            self.cooling.remove(&(until, res.clone()));
        }
        self.take_out_of_line(&id, ip, role);
        Ok(())
    }

    /// Puts an idle unit into cool-down until `until` (restoring a record at start); false
    /// when the unit does not exist or is not idle.
    pub(crate) fn restore_cooling(&mut self, res: &ResourceId, until: Instant) -> bool {
        let Some((id, ip, role)) = self.locate(res) else {
            return false;
        };
        let Some(unit) = self.enis.get_mut(&id).and_then(|s| s.units.get_mut(&ip)) else {
            return false;
        };
        if !matches!(unit.state, UnitState::Idle | UnitState::Pending) {
            return false;
        }
        unit.state = UnitState::Cooling { until };
        unit.cooling_record = true;
        self.take_out_of_line(&id, ip, role);
        self.cooling.insert((until, res.clone()));
        true
    }

    /// Gives a reserved unit back (its commit failed or its waiter left): idle again, first in
    /// line.
    pub(crate) fn unreserve(&mut self, res: &ResourceId) {
        let Some((id, ip, _)) = self.locate(res) else {
            return;
        };
        let reserved = self
            .enis
            .get(&id)
            .and_then(|s| s.units.get(&ip))
            .is_some_and(|u| matches!(u.state, UnitState::Reserved(_)));
        if reserved {
            self.make_idle(&id, ip, true);
        }
    }

    /// A reserved unit's record is durable: it is in use.
    pub(crate) fn bind(&mut self, res: &ResourceId, pod: &PodKey) {
        let Some((id, ip, _)) = self.locate(res) else {
            return;
        };
        if let Some(unit) = self.enis.get_mut(&id).and_then(|s| s.units.get_mut(&ip)) {
            unit.state = UnitState::InUse(pod.clone());
            unit.cooling_record = false;
        }
    }

    /// A unit's binding was removed durably: cool down until `until` (a cooling record was
    /// written), or idle at once when there is no cool-down.
    pub(crate) fn unbind(&mut self, res: &ResourceId, until: Option<Instant>) {
        let Some((id, ip, _)) = self.locate(res) else {
            return;
        };
        let Some(unit) = self.enis.get_mut(&id).and_then(|s| s.units.get_mut(&ip)) else {
            return;
        };
        if !matches!(unit.state, UnitState::InUse(_)) {
            return;
        }
        match until {
            Some(until) => {
                unit.state = UnitState::Cooling { until };
                unit.cooling_record = true;
                self.cooling.insert((until, res.clone()));
            }
            None => self.make_idle(&id, ip, false),
        }
    }

    /// Hands idle units to waiting allocations, oldest first. A waiter that left gives its
    /// unit back at once.
    pub(crate) fn serve_waiters(&mut self) {
        for kind in KINDS {
            while let Some(front) = self.waiters[ki(kind)].front() {
                let pod = front.pod.clone();
                let Some(alloc) = self.reserve(kind, &pod) else {
                    break;
                };
                let Some(waiter) = self.waiters[ki(kind)].pop_front() else {
                    break;
                };
                let res = alloc.resource();
                if waiter.tx.send(alloc).is_err() {
                    self.unreserve(&res);
                }
            }
        }
    }

    /// Removes a waiter (its deadline passed); false when it was already served.
    pub(crate) fn remove_waiter(&mut self, kind: ResourceKind, id: u64) -> bool {
        let q = &mut self.waiters[ki(kind)];
        match q.iter().position(|w| w.id == id) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes units (and an exclusive ENI's idle entry) for addresses given back to the
    /// cloud or gone from it.
    pub(crate) fn drop_units(&mut self, eni_id: &str, ips: &[Ipv4Addr]) {
        let Some(slot) = self.enis.get_mut(eni_id) else {
            return;
        };
        let role = slot.role;
        let mut cooling = Vec::new();
        let mut removed = false;
        for ip in ips {
            if let Some(unit) = slot.units.remove(ip) {
                removed = true;
                if let UnitState::Cooling { until } = unit.state {
                    cooling.push((until, *ip));
                }
            }
        }
        slot.idle.retain(|ip| !ips.contains(ip));
        slot.epoch += 1;
        for (until, ip) in cooling {
            let res = match role {
                Role::Exclusive => ResourceId::Eni {
                    eni_id: eni_id.to_owned(),
                },
                Role::Shared | Role::Primary => ResourceId::Ip {
                    eni_id: eni_id.to_owned(),
                    ip,
                },
            };
            self.cooling.remove(&(until, res));
        }
        if role == Role::Exclusive && removed {
            self.idle_exclusive.retain(|id| id != eni_id);
        }
    }

    /// Forgets an ENI entirely (deleted, or gone from the cloud).
    pub(crate) fn drop_eni(&mut self, eni_id: &str) {
        let ips: Vec<Ipv4Addr> = self
            .enis
            .get(eni_id)
            .map(|s| s.units.keys().copied().collect())
            .unwrap_or_default();
        self.drop_units(eni_id, &ips);
        self.enis.remove(eni_id);
    }

    /// Gauges for a metrics snapshot.
    pub(crate) fn fill_gauges(&self, snap: &mut MetricsSnapshot) {
        let mut g = [KindGauges::default(), KindGauges::default()];
        let mut e = EniGauges::default();
        for slot in self.enis.values() {
            let k = ki(slot.role.kind());
            match slot.phase {
                Phase::Attaching { .. } => e.attaching += 1,
                Phase::Ready => e.ready += 1,
                Phase::Releasing => e.releasing += 1,
            }
            for unit in slot.units.values() {
                match unit.state {
                    UnitState::Pending => g[k].being_added += 1,
                    UnitState::Idle => g[k].idle += 1,
                    UnitState::Cooling { .. } => g[k].cooling += 1,
                    UnitState::Reserved(_) | UnitState::InUse(_) => g[k].in_use += 1,
                    UnitState::Releasing => g[k].being_released += 1,
                }
            }
            g[0].being_added += slot.in_flight_v4;
        }
        e.attaching += self.creates_in_flight;
        e.orphans = u32::try_from(self.orphans.len()).unwrap_or(u32::MAX);
        for kind in KINDS {
            let k = ki(kind);
            g[k].being_added += self.creating[k];
            g[k].waiting = u32::try_from(self.waiters[k].len()).unwrap_or(u32::MAX);
        }
        g[0].capacity = self.cap.shared_ips;
        g[1].capacity = self.cap.enis;
        snap.shared = g[0];
        snap.exclusive = g[1];
        snap.enis = e;
        snap.blocker.clone_from(&self.blocker);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use cnikit_cloud_api::{EniAttachment, EniStatus, InstanceLimits};

    use super::*;

    pub(crate) fn state_with(cfg: PoolConfig) -> PoolState {
        let cap = cfg.capacity(&InstanceLimits::new("t", 4, 4, 4)).unwrap();
        let mut subnets = BTreeMap::new();
        subnets.insert(
            "vsw-1".to_owned(),
            SubnetInfo {
                cidr: "198.18.0.0/24".parse().unwrap(),
                ipv6_cidr: None,
                gateway: Ipv4Addr::new(198, 18, 0, 253),
                free: 200,
            },
        );
        PoolState::new(Arc::new(cfg), cap, 4, subnets, Instant::now(), 7)
    }

    pub(crate) fn eni(id: &str, first: u8, n: u8) -> Eni {
        let mut e = Eni::new(id);
        e.mac = format!("00:16:3e:00:00:{first:02x}");
        e.status = EniStatus::InUse;
        e.subnet_id = "vsw-1".into();
        let mut a = EniAttachment::new("i-1");
        a.device_index = Some(2);
        e.attachment = Some(a);
        e.primary_ipv4 = Some(Ipv4Addr::new(198, 18, 0, first));
        e.secondary_ipv4 = (1..n)
            .map(|i| Ipv4Addr::new(198, 18, 0, first + i))
            .collect();
        e
    }

    fn add_ready(st: &mut PoolState, e: &Eni) {
        let cfg = st.cfg.clone();
        let mut slot = EniSlot::from_eni(
            e,
            Role::Shared,
            Phase::Ready,
            &UnitState::Pending,
            &cfg,
            &st.cap,
            4,
        );
        slot.activate(cfg.ip_stack);
        st.enis.insert(slot.id.clone(), slot);
    }

    #[test]
    fn reserve_packs_the_fullest_eni_and_cooling_returns_units() {
        let mut st = state_with(PoolConfig::new("i-1", "t", ["vsw-1"], ["sg"]));
        add_ready(&mut st, &eni("eni-a", 10, 4));
        add_ready(&mut st, &eni("eni-b", 20, 2));
        assert_eq!(st.idle(ResourceKind::SharedIp), 6);
        let pod = |n: &str| PodKey::new("ns", n, "c", "eth0");
        let a = st.reserve(ResourceKind::SharedIp, &pod("a")).unwrap();
        // Equal use: the tie goes to the first id; then the used one is fuller.
        let b = st.reserve(ResourceKind::SharedIp, &pod("b")).unwrap();
        assert_eq!(a.eni_id, b.eni_id);
        assert_eq!(a.route_table_id, 1002);
        assert_eq!(a.gateway, Ipv4Addr::new(198, 18, 0, 253));
        st.bind(&a.resource(), &pod("a"));
        let now = Instant::now();
        st.unbind(&a.resource(), Some(now + Duration::from_secs(30)));
        assert_eq!(
            st.unit_state(&a.resource()),
            Some(&UnitState::Cooling {
                until: now + Duration::from_secs(30)
            })
        );
        assert_eq!(st.next_cooling_end(), Some(now + Duration::from_secs(30)));
        st.promote_cooled(now + Duration::from_secs(29));
        assert_eq!(st.idle(ResourceKind::SharedIp), 4);
        st.promote_cooled(now + Duration::from_secs(30));
        assert_eq!(st.idle(ResourceKind::SharedIp), 5);
        // The unreserved unit goes to the front of the line.
        st.unreserve(&b.resource());
        let c = st.reserve(ResourceKind::SharedIp, &pod("c")).unwrap();
        assert_eq!(c.ipv4, b.ipv4);
    }

    #[test]
    fn waiters_are_served_in_order_and_a_gone_waiter_returns_its_unit() {
        let mut st = state_with(PoolConfig::new("i-1", "t", ["vsw-1"], ["sg"]));
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        drop(rx2);
        let (tx3, mut rx3) = oneshot::channel();
        for (id, tx) in [(1, tx1), (2, tx2), (3, tx3)] {
            st.waiters[0].push_back(Waiter {
                id,
                pod: PodKey::new("ns", format!("p{id}"), "c", "eth0"),
                tx,
            });
        }
        add_ready(&mut st, &eni("eni-a", 10, 2));
        st.serve_waiters();
        let first = rx1.blocking_recv().unwrap();
        assert_eq!(first.pod.name, "p1");
        // p2 left: its unit went to p3.
        let third = rx3.try_recv().unwrap();
        assert_eq!(third.pod.name, "p3");
        assert!(st.waiters[0].is_empty());
        assert_eq!(st.idle(ResourceKind::SharedIp), 0);
    }

    #[test]
    fn dual_stack_units_wait_for_their_ipv6_partner() {
        let mut cfg = PoolConfig::new("i-1", "t", ["vsw-1"], ["sg"]);
        cfg.ip_stack = IpStack::Dual;
        let mut st = state_with(cfg.clone());
        let mut e = eni("eni-a", 10, 3);
        e.ipv6 = vec!["2001:db8::1".parse().unwrap()];
        let cap = st.cap;
        let mut slot = EniSlot::from_eni(
            &e,
            Role::Shared,
            Phase::Ready,
            &UnitState::Pending,
            &cfg,
            &cap,
            4,
        );
        assert_eq!(slot.activate(IpStack::Dual).len(), 1);
        assert_eq!(slot.unpaired(), 2);
        slot.spare_v6.push("2001:db8::2".parse().unwrap());
        slot.pair_v6(IpStack::Dual);
        assert_eq!(slot.activate(IpStack::Dual).len(), 1);
        st.enis.insert(slot.id.clone(), slot);
        let a = st
            .reserve(ResourceKind::SharedIp, &PodKey::new("n", "p", "c", "e"))
            .unwrap();
        assert!(a.ipv6.is_some());
    }
}
