//! Deciding what to ask the cloud for: demand, pre-warm, release above the high watermark,
//! attach polls, leaked ENIs. Pure functions of the model; the engine runs the operations.

use std::net::{Ipv4Addr, Ipv6Addr};

use cnikit_cloud_api::ErrorKind;
use tokio::time::Instant;

use crate::{
    allocation::ResourceId,
    config::{IpStack, VSwitchSelection, Watermarks},
    error::Blocker,
    pod::ResourceKind,
    state::{KINDS, Phase, PoolState, Role, UnitState, ki},
};

/// IPv6 addresses ECS assigns to an unattached ENI, at most.
const MAX_IPV6_AT_CREATE: u32 = 10;

/// One piece of work for the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Assign addresses to a ready ENI.
    Assign { eni_id: String, v4: u32, v6: u32 },
    /// Create an ENI (with its addresses) and attach it.
    Create {
        role: Role,
        vswitch_id: String,
        secondary_v4: u32,
        v6: u32,
        /// Units the ENI brings (shared: addresses; exclusive: 1).
        units: u32,
    },
    /// Look at attaching ENIs (one describe call).
    Poll { eni_ids: Vec<String> },
    /// Attach again an ENI whose attach failed asynchronously.
    Attach { eni_id: String },
    /// Give idle addresses back.
    Unassign {
        eni_id: String,
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
        cooling_records: Vec<ResourceId>,
    },
    /// Detach (when attached) and delete an ENI.
    Delete {
        eni_id: String,
        detach: bool,
        cooling_records: Vec<ResourceId>,
    },
    /// Record that a kind's warm-up target was reached.
    WarmUpDone(ResourceKind),
    /// Run GC.
    Gc,
}

/// What a failed operation was doing, for deciding what to pause.
#[derive(Clone, Debug)]
pub(crate) enum Path {
    /// Assigning to this ENI.
    Eni(String),
    /// Creating or attaching in this vSwitch.
    Create(String),
}

impl PoolState {
    fn watermarks(&self, kind: ResourceKind) -> Watermarks {
        match kind {
            ResourceKind::SharedIp => self.cfg.shared,
            ResourceKind::ExclusiveEni => self.cfg.exclusive,
        }
    }

    fn capacity_of(&self, kind: ResourceKind) -> u32 {
        match kind {
            ResourceKind::SharedIp => self.cap.shared_ips,
            ResourceKind::ExclusiveEni => self.cap.enis,
        }
    }

    /// Units of `kind` the pool holds or is getting (everything but those being released).
    pub(crate) fn total(&self, kind: ResourceKind) -> u32 {
        let k = ki(kind);
        let mut n = self.creating[k];
        for slot in self.enis.values().filter(|s| s.role.kind() == kind) {
            n += slot.count(|s| *s != UnitState::Releasing);
            if kind == ResourceKind::SharedIp {
                n += slot.in_flight_v4;
            }
        }
        n
    }

    /// Units that will become idle without further calls being planned.
    fn pending(&self, kind: ResourceKind) -> u32 {
        let k = ki(kind);
        let mut n = self.creating[k];
        for slot in self.enis.values().filter(|s| s.role.kind() == kind) {
            if slot.phase == Phase::Releasing {
                continue;
            }
            n += slot.count(|s| *s == UnitState::Pending);
            if kind == ResourceKind::SharedIp {
                n += slot.in_flight_v4;
            }
        }
        n
    }

    /// Secondary ENIs attached, being attached or being created (they all take a slot).
    fn enis_used(&self) -> u32 {
        let attached = self
            .enis
            .values()
            .filter(|s| s.role != Role::Primary)
            .count();
        let orphans = self.orphans.values().filter(|o| o.attached).count();
        u32::try_from(attached + orphans)
            .unwrap_or(u32::MAX)
            .saturating_add(self.creates_in_flight)
    }

    /// How many more units of `kind` to ask for now.
    fn need(&self, kind: ResourceKind) -> u32 {
        let k = ki(kind);
        let w = self.watermarks(kind);
        let waiting = u32::try_from(self.waiters[k].len()).unwrap_or(u32::MAX);
        let have = self.idle(kind) + self.pending(kind);
        let mut need = (waiting + w.min_idle).saturating_sub(have);
        if self.warm_up_pending[k] {
            need = need.max(w.warm_up.saturating_sub(self.total(kind)));
        }
        need.min(self.capacity_of(kind).saturating_sub(self.total(kind)))
    }

    /// What to ask for once `need` (> 0) forces a cloud call anyway: up to the high watermark
    /// for shared IPs (a call brings 1 or 10 addresses for the same price, and fewer calls
    /// follow), exactly `need` for exclusive ENIs (each one is a call).
    fn want(&self, kind: ResourceKind, need: u32) -> u32 {
        if need == 0 || kind == ResourceKind::ExclusiveEni {
            return need;
        }
        let w = self.watermarks(kind);
        let room = self.capacity_of(kind).saturating_sub(self.total(kind));
        need.saturating_add(w.max_idle - w.min_idle)
            .min(room)
            .max(need)
    }

    /// Not paused, and (as far as the pool knows) not full.
    fn vswitch_usable(&self, vsw: &str, now: Instant) -> bool {
        self.vswitch_paused.get(vsw).is_none_or(|t| *t <= now)
            && self.subnets.get(vsw).is_some_and(|s| s.free > 0)
    }

    fn subnet_free(&self, vsw: &str) -> u32 {
        self.subnets
            .get(vsw)
            .map_or(0, |s| u32::try_from(s.free).unwrap_or(u32::MAX))
    }

    fn pick_vswitch(&self, now: Instant) -> Option<String> {
        let mut usable = self
            .cfg
            .vswitches
            .iter()
            .filter(|v| self.vswitch_usable(v, now));
        match self.cfg.vswitch_selection {
            VSwitchSelection::Ordered => usable.next().cloned(),
            VSwitchSelection::MostFree => usable
                .enumerate()
                .max_by_key(|(i, v)| {
                    (
                        self.subnets.get(v.as_str()).map_or(0, |s| s.free),
                        std::cmp::Reverse(*i),
                    )
                })
                .map(|(_, v)| v.clone()),
        }
    }

    /// Plans the work to start now; marks what it plans as in flight.
    pub(crate) fn plan(&mut self, now: Instant) -> Vec<Op> {
        let mut ops = std::mem::take(&mut self.queued);
        self.promote_cooled(now);
        self.serve_waiters();
        self.plan_warm_up_done(&mut ops);
        self.plan_polls(now, &mut ops);
        self.plan_attach_timeouts(now, &mut ops);
        self.plan_v6_repairs(now, &mut ops);
        let shared_left = self.plan_assigns(now, &mut ops);
        self.plan_creates(shared_left, now, &mut ops);
        for kind in KINDS {
            self.plan_release(kind, now, &mut ops);
        }
        self.plan_orphans(now, &mut ops);
        self.refresh_blocker(now);
        self.note_capacity_blocker();
        if now >= self.next_gc_at && !self.gc_running {
            self.gc_running = true;
            ops.push(Op::Gc);
        }
        ops
    }

    fn plan_warm_up_done(&mut self, ops: &mut Vec<Op>) {
        for kind in KINDS {
            let k = ki(kind);
            if self.warm_up_pending[k] {
                let w = self.watermarks(kind);
                let settled = self.total(kind).saturating_sub(self.pending(kind));
                if settled >= w.warm_up.min(self.capacity_of(kind)) {
                    self.warm_up_pending[k] = false;
                    ops.push(Op::WarmUpDone(kind));
                }
            }
        }
    }

    /// When the next attach poll is due (polls within `attach_poll_batch` of the first one
    /// are made together, at the latest of them).
    fn poll_due(&self) -> Option<Instant> {
        let due: Vec<Instant> = self
            .enis
            .values()
            .filter_map(|s| match s.phase {
                Phase::Attaching { next_poll, .. } => next_poll,
                _ => None,
            })
            .collect();
        let first = *due.iter().min()?;
        let window = self.cfg.attach_poll_batch;
        due.into_iter().filter(|t| *t <= first + window).max()
    }

    fn plan_polls(&mut self, now: Instant, ops: &mut Vec<Op>) {
        if self.poll_in_flight || self.poll_due().is_none_or(|t| t > now) {
            return;
        }
        let eni_ids: Vec<String> = self
            .enis
            .values()
            .filter(|s| {
                matches!(
                    s.phase,
                    Phase::Attaching {
                        next_poll: Some(_),
                        ..
                    }
                )
            })
            .map(|s| s.id.clone())
            .collect();
        self.poll_in_flight = true;
        ops.push(Op::Poll { eni_ids });
    }

    fn plan_attach_timeouts(&mut self, now: Instant, ops: &mut Vec<Op>) {
        let timeout = self.cfg.attach_timeout;
        let late: Vec<String> = self
            .enis
            .values()
            .filter(|s| matches!(s.phase, Phase::Attaching { since, next_poll: Some(_), .. } if now >= since + timeout))
            .map(|s| s.id.clone())
            .collect();
        for id in late {
            tracing::warn!(eni_id = %id, "ENI not attached in time; deleting it");
            self.blocker = Some(Blocker::Cloud {
                kind: ErrorKind::Timeout,
                detail: format!("ENI {id} was not attached after {timeout:?}"),
            });
            ops.push(self.begin_delete(&id, true));
        }
    }

    /// Marks an ENI as being deleted and returns the operation.
    pub(crate) fn begin_delete(&mut self, eni_id: &str, detach: bool) -> Op {
        let mut cooling_records = Vec::new();
        if let Some(slot) = self.enis.get_mut(eni_id) {
            slot.phase = Phase::Releasing;
            slot.busy = true;
            slot.epoch += 1;
            slot.idle.clear();
            for (ip, unit) in &mut slot.units {
                if unit.cooling_record {
                    cooling_records.push(match slot.role {
                        Role::Exclusive => ResourceId::Eni {
                            eni_id: eni_id.to_owned(),
                        },
                        Role::Shared | Role::Primary => ResourceId::Ip {
                            eni_id: eni_id.to_owned(),
                            ip: *ip,
                        },
                    });
                }
                if !matches!(unit.state, UnitState::InUse(_) | UnitState::Reserved(_)) {
                    unit.state = UnitState::Releasing;
                }
            }
            if slot.role == Role::Exclusive {
                self.idle_exclusive.retain(|id| id != eni_id);
            }
        }
        Op::Delete {
            eni_id: eni_id.to_owned(),
            detach,
            cooling_records,
        }
    }

    /// Dual stack: asks IPv6 partners for units that lack one.
    fn plan_v6_repairs(&mut self, now: Instant, ops: &mut Vec<Op>) {
        if self.cfg.ip_stack != IpStack::Dual {
            return;
        }
        let per_call = self.cfg.max_ips_per_assign;
        let wanted: Vec<(String, u32)> = self
            .enis
            .values()
            .filter(|s| s.role != Role::Exclusive && s.available_for_ops(now))
            .filter_map(|s| {
                let have = u32::try_from(s.spare_v6.len()).unwrap_or(u32::MAX);
                let deficit = s.unpaired().saturating_sub(have);
                let room = s.v6_limit.saturating_sub(
                    u32::try_from(s.units.values().filter(|u| u.v6.is_some()).count())
                        .unwrap_or(u32::MAX)
                        + have,
                );
                let n = deficit.min(room).min(per_call);
                (n > 0).then(|| (s.id.clone(), n))
            })
            .collect();
        for (id, n) in wanted {
            if let Some(slot) = self.enis.get_mut(&id) {
                slot.busy = true;
                slot.in_flight_v6 += n;
            }
            ops.push(Op::Assign {
                eni_id: id,
                v4: 0,
                v6: n,
            });
        }
    }

    /// Fills ready shared ENIs (fullest first); returns the shared need left for new ENIs.
    /// Fills ready shared ENIs (fullest first); returns the shared need and want left for new
    /// ENIs.
    fn plan_assigns(&mut self, now: Instant, ops: &mut Vec<Op>) -> (u32, u32) {
        let need = self.need(ResourceKind::SharedIp);
        let wanted = self.want(ResourceKind::SharedIp, need);
        let mut want = wanted;
        if want == 0 {
            return (0, 0);
        }
        let mut candidates: Vec<(u32, String)> = self
            .enis
            .values()
            .filter(|s| {
                s.role != Role::Exclusive
                    && s.available_for_ops(now)
                    && s.room() > 0
                    && self.vswitch_usable(&s.vswitch_id, now)
            })
            .map(|s| (s.v4_count(), s.id.clone()))
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        let dual = self.cfg.ip_stack == IpStack::Dual;
        for (_, id) in candidates {
            if want == 0 {
                break;
            }
            let per_call = self.cfg.max_ips_per_assign;
            let Some(vsw) = self.enis.get(&id).map(|s| s.vswitch_id.clone()) else {
                continue;
            };
            let free = self.subnet_free(&vsw);
            let Some(slot) = self.enis.get_mut(&id) else {
                continue;
            };
            let n = slot.room().min(per_call).min(want).min(free);
            if n == 0 {
                continue;
            }
            let v6 = if dual { n } else { 0 };
            slot.busy = true;
            slot.in_flight_v4 += n;
            slot.in_flight_v6 += v6;
            want -= n;
            if let Some(s) = self.subnets.get_mut(&vsw) {
                s.free = s.free.saturating_sub(u64::from(n));
            }
            ops.push(Op::Assign {
                eni_id: id,
                v4: n,
                v6,
            });
        }
        let assigned = wanted - want;
        (need.saturating_sub(assigned), want)
    }

    /// Creates ENIs while a need is left: exclusive ones, then shared ones each carrying up to
    /// `shared_want` addresses.
    fn plan_creates(&mut self, shared: (u32, u32), now: Instant, ops: &mut Vec<Op>) {
        let (shared_need, mut shared_want) = shared;
        let mut need = [shared_need, self.need(ResourceKind::ExclusiveEni)];
        if need == [0, 0] || self.create_paused_until.is_some_and(|t| t > now) {
            return;
        }
        let per_eni = self.cap.ips_per_shared_eni;
        let primary_unit = u32::from(self.cfg.hand_out_eni_primary_ip);
        // Exclusive ENIs first: one ENI serves one pod, shared pods can still use assigns.
        for kind in [ResourceKind::ExclusiveEni, ResourceKind::SharedIp] {
            let k = ki(kind);
            while need[k] > 0
                && self.enis_used() < self.cap.enis
                && self.creates_in_flight < self.cfg.max_parallel_creates
            {
                let Some(vswitch_id) = self.pick_vswitch(now) else {
                    let ids: Vec<String> = self.cfg.vswitches.clone();
                    self.blocker = Some(Blocker::SubnetExhausted { vswitch_ids: ids });
                    return;
                };
                let (role, secondary_v4, units) = match kind {
                    ResourceKind::ExclusiveEni => (Role::Exclusive, 0, 1),
                    ResourceKind::SharedIp => {
                        let units = shared_want
                            .max(need[k])
                            .min(per_eni)
                            .min(self.subnet_free(&vswitch_id))
                            .max(1);
                        let secondary = units
                            .saturating_sub(primary_unit)
                            .min(self.cfg.max_ips_per_create);
                        (Role::Shared, secondary, secondary + primary_unit)
                    }
                };
                let v6 = match (self.cfg.ip_stack, role) {
                    (IpStack::Dual, Role::Exclusive) => 1,
                    (IpStack::Dual, _) => units.min(MAX_IPV6_AT_CREATE),
                    _ => 0,
                };
                if let Some(s) = self.subnets.get_mut(&vswitch_id) {
                    s.free = s.free.saturating_sub(u64::from(units));
                }
                self.creates_in_flight += 1;
                self.creating[k] += units;
                need[k] = need[k].saturating_sub(units);
                if kind == ResourceKind::SharedIp {
                    shared_want = shared_want.saturating_sub(units);
                }
                ops.push(Op::Create {
                    role,
                    vswitch_id,
                    secondary_v4,
                    v6,
                    units,
                });
            }
        }
    }

    fn plan_release(&mut self, kind: ResourceKind, now: Instant, ops: &mut Vec<Op>) {
        let k = ki(kind);
        let high = self.watermarks(kind).max_idle;
        let idle = self.idle(kind);
        if !self.waiters[k].is_empty() || idle <= high {
            self.surplus_since[k] = None;
            return;
        }
        let since = *self.surplus_since[k].get_or_insert(now);
        if now < since + self.cfg.idle_release_after || now < self.next_release_at[k] {
            return;
        }
        let batch = (idle - high).min(self.cfg.release_batch);
        let interval = self.cfg.release_interval;
        self.next_release_at[k] = now + self.jittered(interval);
        match kind {
            ResourceKind::ExclusiveEni => {
                let victims: Vec<String> = self
                    .idle_exclusive
                    .iter()
                    .filter(|id| self.enis.get(*id).is_some_and(|s| s.available_for_ops(now)))
                    .take(batch as usize)
                    .cloned()
                    .collect();
                for id in victims {
                    ops.push(self.begin_delete(&id, true));
                }
            }
            ResourceKind::SharedIp => self.plan_shared_release(batch, now, ops),
        }
    }

    fn plan_shared_release(&mut self, batch: u32, now: Instant, ops: &mut Vec<Op>) {
        // A whole secondary ENI whose units are all idle, when the batch covers it.
        let whole = self
            .enis
            .values()
            .filter(|s| {
                s.role == Role::Shared
                    && s.available_for_ops(now)
                    && !s.units.is_empty()
                    && s.idle.len() == s.units.len()
                    && s.spare_v6.is_empty()
                    && u32::try_from(s.units.len()).unwrap_or(u32::MAX) <= batch
            })
            .min_by_key(|s| s.units.len())
            .map(|s| s.id.clone());
        if let Some(id) = whole {
            ops.push(self.begin_delete(&id, true));
            return;
        }
        // Otherwise idle secondary addresses of the emptiest ENI that has some.
        let Some(id) = self
            .enis
            .values()
            .filter(|s| {
                s.role != Role::Exclusive
                    && s.available_for_ops(now)
                    && s.idle.iter().any(|ip| *ip != s.primary_ip)
            })
            .min_by_key(|s| {
                (
                    s.units.len().saturating_sub(s.idle.len()),
                    std::cmp::Reverse(s.idle.len()),
                )
            })
            .map(|s| s.id.clone())
        else {
            return;
        };
        let per_call = self.cfg.max_ips_per_unassign;
        let Some(slot) = self.enis.get_mut(&id) else {
            return;
        };
        let take = batch.min(per_call) as usize;
        let mut v4 = Vec::new();
        let mut kept = std::collections::VecDeque::new();
        // Most recently idle first: the oldest idle ones stay for reuse.
        while let Some(ip) = slot.idle.pop_back() {
            if v4.len() < take && ip != slot.primary_ip {
                v4.push(ip);
            } else {
                kept.push_front(ip);
            }
        }
        slot.idle = kept;
        let mut v6 = Vec::new();
        let mut cooling_records = Vec::new();
        for ip in &v4 {
            if let Some(unit) = slot.units.get_mut(ip) {
                unit.state = UnitState::Releasing;
                v6.extend(unit.v6);
                if unit.cooling_record {
                    cooling_records.push(ResourceId::Ip {
                        eni_id: id.clone(),
                        ip: *ip,
                    });
                }
            }
        }
        slot.busy = true;
        slot.epoch += 1;
        ops.push(Op::Unassign {
            eni_id: id,
            v4,
            v6,
            cooling_records,
        });
    }

    fn plan_orphans(&mut self, now: Instant, ops: &mut Vec<Op>) {
        let due: Vec<(String, bool)> = self
            .orphans
            .iter()
            .filter(|(id, o)| !o.busy && o.delete_after <= now && !self.enis.contains_key(*id))
            .map(|(id, o)| (id.clone(), o.attached))
            .collect();
        for (id, attached) in due {
            if let Some(o) = self.orphans.get_mut(&id) {
                o.busy = true;
            }
            ops.push(Op::Delete {
                eni_id: id,
                detach: attached,
                cooling_records: Vec::new(),
            });
        }
    }

    /// Forgets a quota, exhaustion or capacity note once its pause is over.
    fn refresh_blocker(&mut self, now: Instant) {
        let still = match &self.blocker {
            Some(Blocker::QuotaExceeded { .. }) => {
                self.create_paused_until.is_some_and(|t| t > now)
                    || self.enis.values().any(|s| s.paused(now))
            }
            Some(Blocker::SubnetExhausted { .. }) => !self
                .cfg
                .vswitches
                .iter()
                .any(|v| self.vswitch_usable(v, now)),
            Some(Blocker::CapacityReached { .. }) => false,
            Some(_) | None => true,
        };
        if !still {
            self.blocker = None;
        }
    }

    /// Notes when waiting allocations cannot be served because the pool is full.
    fn note_capacity_blocker(&mut self) {
        for kind in KINDS {
            let k = ki(kind);
            if self.waiters[k].is_empty() {
                continue;
            }
            let cooling = self
                .enis
                .values()
                .filter(|s| s.role.kind() == kind)
                .map(|s| s.count(|u| matches!(u, UnitState::Cooling { .. })))
                .sum::<u32>();
            let full = self.total(kind) >= self.capacity_of(kind)
                || (kind == ResourceKind::ExclusiveEni && self.enis_used() >= self.cap.enis);
            if full && cooling == 0 && self.pending(kind) == 0 {
                self.blocker = Some(Blocker::CapacityReached {
                    capacity: self.capacity_of(kind),
                });
            }
        }
    }

    /// When the engine must look again even if nothing happens: the earliest timer still in
    /// the future (work due now that could not start waits for the operation in its way, whose
    /// end wakes the engine).
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut at: Vec<Instant> = Vec::new();
        if !self.poll_in_flight {
            at.extend(self.poll_due());
        }
        at.extend(self.next_cooling_end());
        if !self.gc_running {
            at.push(self.next_gc_at);
        }
        for o in self.orphans.values().filter(|o| !o.busy) {
            at.push(o.delete_after);
        }
        for slot in self.enis.values() {
            at.extend(slot.paused_until);
            if let Phase::Attaching {
                since,
                next_poll: Some(_),
                ..
            } = slot.phase
            {
                at.push(since + self.cfg.attach_timeout);
            }
        }
        at.extend(self.create_paused_until);
        at.extend(self.vswitch_paused.values().copied());
        for kind in KINDS {
            let k = ki(kind);
            if let Some(since) = self.surplus_since[k] {
                at.push((since + self.cfg.idle_release_after).max(self.next_release_at[k]));
            }
        }
        at.into_iter().filter(|t| *t > now).min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::PoolConfig,
        pod::PodKey,
        state::{EniSlot, Waiter, tests::*},
    };

    #[test]
    fn demand_is_batched_into_one_create_carrying_the_addresses() {
        let mut cfg = PoolConfig::new("i-1", "t", ["vsw-1"], ["sg"]);
        cfg.shared = Watermarks::new(1, 4);
        let mut st = state_with(cfg);
        for i in 0..2 {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            st.waiters[0].push_back(Waiter {
                id: i,
                pod: PodKey::new("ns", format!("p{i}"), "c", "eth0"),
                tx,
            });
        }
        let now = Instant::now();
        let ops = st.plan(now);
        // 2 waiters + low watermark 1 = 3 units needed; the call that must be made anyway
        // fills towards the high watermark (4), within the ENI's 4 addresses, its primary
        // included.
        assert_eq!(
            ops,
            vec![Op::Create {
                role: Role::Shared,
                vswitch_id: "vsw-1".into(),
                secondary_v4: 3,
                v6: 0,
                units: 4
            }]
        );
        // Nothing more while it is in flight.
        assert!(st.plan(now).is_empty());
    }

    #[test]
    fn surplus_is_released_after_the_idle_period_in_batches() {
        let mut cfg = PoolConfig::new("i-1", "t", ["vsw-1"], ["sg"]);
        cfg.shared = Watermarks::new(0, 1);
        cfg.release_batch = 2;
        cfg.jitter = 0.0;
        let mut st = state_with(cfg.clone());
        let cap = st.cap;
        let mut slot = EniSlot::from_eni(
            &eni("eni-a", 10, 4),
            Role::Shared,
            Phase::Ready,
            &UnitState::Pending,
            &cfg,
            &cap,
            4,
        );
        slot.activate(cfg.ip_stack);
        st.enis.insert(slot.id.clone(), slot);
        let t0 = Instant::now();
        assert!(st.plan(t0).is_empty(), "surplus clock starts");
        assert!(st.plan(t0 + Duration::from_secs(59)).is_empty());
        let ops = st.plan(t0 + Duration::from_secs(60));
        let [Op::Unassign { v4, .. }] = ops.as_slice() else {
            panic!("{ops:?}")
        };
        assert_eq!(v4.len(), 2, "one batch");
        assert!(
            !v4.contains(&Ipv4Addr::new(198, 18, 0, 10)),
            "never the primary"
        );
        assert_eq!(st.idle(ResourceKind::SharedIp), 2);
    }
}
