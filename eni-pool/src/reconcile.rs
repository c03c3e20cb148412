//! Start-up reconciliation and GC: records against the cloud's view and the liveness oracle.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::Arc,
};

use cnikit_cloud_api::{Eni, EniFilter, EniKind, EniStatus};
use tokio::time::Instant;

use crate::{
    allocation::ResourceId,
    config::tags,
    engine::Shared,
    error::{Error, Result},
    liveness::PodLiveness,
    pod::{PodKey, ResourceKind},
    state::{EniSlot, Orphan, Phase, PodEntry, PoolState, Role, UnitState},
    store::{Change, now_ms},
};

/// What start-up reconciliation found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartReport {
    /// ENIs of this pool found attached (or attaching) and adopted.
    pub adopted_enis: Vec<String>,
    /// Bindings restored from the records.
    pub restored_bindings: usize,
    /// Pods the liveness oracle says are gone; their records were dropped and their
    /// resources released.
    pub released_gone_pods: Vec<PodKey>,
    /// Bindings whose resource the cloud no longer has (kept until the pod is released).
    pub missing_resources: Vec<(PodKey, ResourceId)>,
    /// Bindings dropped because an older binding holds the same resource.
    pub conflicting_bindings: Vec<PodKey>,
    /// Detached ENIs of this pool, deleted after the leak grace period.
    pub orphan_enis: Vec<String>,
    /// Cooling records dropped (expired, or their resource is gone).
    pub dropped_cooling_records: usize,
    /// Problems that did not stop the start (e.g. the liveness oracle failed).
    pub warnings: Vec<String>,
}

/// What one GC run found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Pods the liveness oracle says are gone, released.
    pub released_pods: Vec<PodKey>,
    /// Addresses found on this pool's ENIs that it did not know, now idle.
    pub adopted_ips: usize,
    /// Idle addresses the cloud no longer has, forgotten.
    pub dropped_ips: usize,
    /// ENIs of this pool found attached that it did not know, adopted.
    pub adopted_enis: Vec<String>,
    /// ENIs the pool knew that the cloud no longer has.
    pub vanished_enis: Vec<String>,
    /// Detached ENIs of this pool, to be deleted after the leak grace period.
    pub orphan_enis: Vec<String>,
    /// Bound resources the cloud no longer has.
    pub lost_resources: Vec<(PodKey, ResourceId)>,
    /// Every error met; GC goes on after each.
    pub errors: Vec<String>,
}

impl GcReport {
    /// Whether the run found nothing to do and met no error.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Every ENI of this pool for this instance (any status), plus the primary ENI when the pool
/// uses it.
async fn fetch_view(shared: &Shared, patient: bool) -> cnikit_cloud_api::Result<Vec<Eni>> {
    let cfg = &shared.cfg;
    let mut filter = EniFilter::tag(tags::POOL, cfg.pool_name.clone());
    filter
        .tags
        .insert(tags::INSTANCE.to_owned(), cfg.instance_id.clone());
    let list = || shared.cloud.describe_enis(&filter);
    let mut enis = if patient {
        shared.retry_patiently("list the pool's ENIs", list).await?
    } else {
        shared.retry("list the pool's ENIs", list).await?
    };
    if cfg.use_primary_eni {
        let list = || shared.cloud.list_instance_enis(&cfg.instance_id);
        let attached = if patient {
            shared
                .retry_patiently("list the instance's ENIs", list)
                .await?
        } else {
            shared.retry("list the instance's ENIs", list).await?
        };
        enis.extend(attached.into_iter().filter(|e| e.kind == EniKind::Primary));
    }
    Ok(enis)
}

fn role_of(eni: &Eni) -> Role {
    if eni.kind == EniKind::Primary {
        Role::Primary
    } else if eni.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_EXCLUSIVE) {
        Role::Exclusive
    } else {
        Role::Shared
    }
}

/// The units the cloud says `eni` has, as the pool would make them.
fn unit_ips(eni: &Eni, role: Role, hand_out_primary: bool) -> BTreeSet<Ipv4Addr> {
    let mut ips: BTreeSet<Ipv4Addr> = BTreeSet::new();
    match role {
        Role::Exclusive => ips.extend(eni.primary_ipv4),
        Role::Shared => {
            if hand_out_primary {
                ips.extend(eni.primary_ipv4);
            }
            ips.extend(eni.secondary_ipv4.iter().copied());
        }
        Role::Primary => ips.extend(eni.secondary_ipv4.iter().copied()),
    }
    ips
}

impl PoolState {
    fn attached_here(&self, eni: &Eni) -> bool {
        eni.instance_id() == Some(self.cfg.instance_id.as_str())
    }

    /// Adopts an ENI unknown to the pool; returns whether it became an orphan.
    fn adopt(&mut self, eni: &Eni, now: Instant, leak_grace: bool) -> Option<bool> {
        let role = role_of(eni);
        let here = self.attached_here(eni);
        let cfg = self.cfg.clone();
        let cap = self.cap;
        let v6_limit = self.v6_limit;
        let phase = match (&eni.status, here) {
            (EniStatus::InUse, true) => Phase::Ready,
            (EniStatus::Attaching, true) => Phase::Attaching {
                since: now,
                next_poll: Some(now + cfg.attach_poll_initial),
                interval: cfg.attach_poll_initial,
                attach_attempts: 1,
            },
            (EniStatus::Available | EniStatus::Detaching, _) if role != Role::Primary => {
                let wait = if leak_grace && eni.status == EniStatus::Available {
                    cfg.leak_grace
                } else {
                    std::time::Duration::ZERO
                };
                self.orphans.entry(eni.id.clone()).or_insert(Orphan {
                    delete_after: now + wait,
                    attached: false,
                    busy: false,
                });
                return Some(true);
            }
            _ => return None,
        };
        let slot = EniSlot::from_eni(eni, role, phase, &UnitState::Pending, &cfg, &cap, v6_limit);
        self.enis.insert(eni.id.clone(), slot);
        self.activate(&eni.id);
        Some(false)
    }
}

/// Start-up: records, the cloud's view, liveness; leaves the model ready for the engine.
pub(crate) async fn start(shared: &Arc<Shared>) -> Result<StartReport> {
    let records = shared
        .store
        .load()
        .await
        .map_err(|e| Error::store("load records", e))?;
    let view = fetch_view(shared, true)
        .await
        .map_err(|e| Error::cloud("list this pool's ENIs", e))?;
    let now = Instant::now();
    let wall = now_ms();
    let cooldown_ms = u64::try_from(shared.cfg.cooldown.as_millis()).unwrap_or(u64::MAX);
    let mut report = StartReport::default();
    let mut changes = Vec::new();
    {
        let mut st = shared.lock();
        st.meta = records.meta;
        st.warm_up_pending = [
            !records.meta.shared_warm_up_done && shared.cfg.shared.warm_up > 0,
            !records.meta.exclusive_warm_up_done && shared.cfg.exclusive.warm_up > 0,
        ];
        for eni in &view {
            match st.adopt(eni, now, true) {
                Some(false) => report.adopted_enis.push(eni.id.clone()),
                Some(true) => report.orphan_enis.push(eni.id.clone()),
                None => {}
            }
        }
        let mut bindings: Vec<_> = records.bindings.values().collect();
        bindings.sort_by_key(|b| b.bound_at_ms);
        for b in bindings {
            let pod = &b.allocation.pod;
            let res = b.allocation.resource();
            match st.claim(&res, pod) {
                Ok(()) => report.restored_bindings += 1,
                Err(Some(holder)) => {
                    tracing::error!(%pod, %holder, resource = %res, "two records hold one resource; dropping the newer");
                    report.conflicting_bindings.push(pod.clone());
                    changes.push(Change::RemoveBinding(pod.clone()));
                    continue;
                }
                Err(None) => {
                    tracing::warn!(%pod, resource = %res, "the cloud no longer has this pod's resource");
                    report.missing_resources.push((pod.clone(), res));
                }
            }
            st.pods.insert(
                pod.clone(),
                PodEntry::Bound(Arc::new(b.allocation.clone()), b.bound_at_ms),
            );
        }
        for c in records.cooling.values() {
            let left = c.until_ms.saturating_sub(wall).min(cooldown_ms);
            let until = now + std::time::Duration::from_millis(left);
            if left == 0 || !st.restore_cooling(&c.resource, until) {
                changes.push(Change::RemoveCooling(c.resource.clone()));
                report.dropped_cooling_records += 1;
            }
        }
    }
    // Pods that are gone (and old enough for the oracle to know them) are released now.
    let candidates = liveness_candidates(shared, wall);
    if !candidates.is_empty() {
        match shared.liveness.check(&candidates).await {
            Ok(answers) => {
                let until_ms = wall.saturating_add(cooldown_ms);
                let mut st = shared.lock();
                for (pod, answer) in candidates.iter().zip(answers) {
                    if answer != PodLiveness::Gone {
                        continue;
                    }
                    let Some(PodEntry::Bound(alloc, _)) = st.pods.remove(pod) else {
                        continue;
                    };
                    let res = alloc.resource();
                    changes.push(Change::RemoveBinding(pod.clone()));
                    if matches!(st.unit_state(&res), Some(UnitState::InUse(_))) {
                        if cooldown_ms > 0 {
                            changes.push(Change::PutCooling(crate::store::CoolingRecord::new(
                                res.clone(),
                                until_ms,
                            )));
                            st.unbind(&res, Some(now + shared.cfg.cooldown));
                        } else {
                            st.unbind(&res, None);
                        }
                    }
                    report.released_gone_pods.push(pod.clone());
                }
            }
            Err(e) => report
                .warnings
                .push(format!("liveness oracle failed; no record dropped: {e}")),
        }
    }
    if !changes.is_empty() {
        shared
            .store
            .commit(changes)
            .await
            .map_err(|e| Error::store("record start-up reconciliation", e))?;
    }
    Ok(report)
}

/// Bound pods old enough to ask the oracle about.
fn liveness_candidates(shared: &Shared, wall_ms: u64) -> Vec<PodKey> {
    let grace = u64::try_from(shared.cfg.liveness_grace.as_millis()).unwrap_or(u64::MAX);
    shared
        .lock()
        .pods
        .iter()
        .filter_map(|(pod, e)| match e {
            PodEntry::Bound(_, at) if at.saturating_add(grace) <= wall_ms => Some(pod.clone()),
            _ => None,
        })
        .collect()
}

/// One GC run: releases gone pods, aligns the model with the cloud, finds leaked ENIs.
/// Keeps going after every error and reports each.
pub(crate) async fn gc(shared: &Arc<Shared>) -> GcReport {
    let _one_at_a_time = shared.gc_lock.lock().await;
    let mut report = GcReport::default();
    let candidates = liveness_candidates(shared, now_ms());
    if !candidates.is_empty() {
        match shared.liveness.check(&candidates).await {
            Ok(answers) => {
                for (pod, answer) in candidates.iter().zip(answers) {
                    if answer != PodLiveness::Gone {
                        continue;
                    }
                    match crate::pool::release(shared, pod).await {
                        Ok(Some(_)) => report.released_pods.push(pod.clone()),
                        Ok(None) => {}
                        Err(e) => report.errors.push(format!("releasing {pod}: {e}")),
                    }
                }
            }
            Err(e) => report.errors.push(format!("liveness oracle: {e}")),
        }
    }
    let epochs: HashMap<String, u64> = shared
        .lock()
        .enis
        .iter()
        .map(|(id, s)| (id.clone(), s.epoch))
        .collect();
    match fetch_view(shared, false).await {
        Ok(view) => shared.lock().sync_with_cloud(&view, &epochs, &mut report),
        Err(e) => report.errors.push(format!("listing this pool's ENIs: {e}")),
    }
    if shared.cfg.vswitches.len() > 1 {
        for vsw in &shared.cfg.vswitches {
            match shared
                .retry("describe vSwitch", || shared.cloud.describe_subnet(vsw))
                .await
            {
                Ok(s) => {
                    if let Some(info) = shared.lock().subnets.get_mut(vsw) {
                        info.free = s.available_ipv4;
                    }
                }
                Err(e) => report.errors.push(format!("describing {vsw}: {e}")),
            }
        }
    }
    shared.wake(false);
    report
}

impl PoolState {
    /// Aligns ENIs that did not change while the view was taken with the view.
    fn sync_with_cloud(
        &mut self,
        view: &[Eni],
        epochs: &HashMap<String, u64>,
        report: &mut GcReport,
    ) {
        let now = Instant::now();
        let hand_out_primary = self.cfg.hand_out_eni_primary_ip;
        let stack = self.cfg.ip_stack;
        let seen: BTreeSet<&str> = view.iter().map(|e| e.id.as_str()).collect();
        for eni in view {
            let Some(slot) = self.enis.get(&eni.id) else {
                if self.orphans.contains_key(&eni.id) || epochs.contains_key(&eni.id) {
                    continue;
                }
                match self.adopt(eni, now, true) {
                    Some(false) => report.adopted_enis.push(eni.id.clone()),
                    Some(true) => report.orphan_enis.push(eni.id.clone()),
                    None => {}
                }
                continue;
            };
            if epochs.get(&eni.id) != Some(&slot.epoch) || slot.busy || slot.phase != Phase::Ready {
                continue;
            }
            let role = slot.role;
            let kind = role.kind();
            if eni.status == EniStatus::InUse && self.attached_here(eni) {
                let cloud = unit_ips(eni, role, hand_out_primary);
                let known: BTreeSet<Ipv4Addr> = slot.units.keys().copied().collect();
                let gone: Vec<Ipv4Addr> = known.difference(&cloud).copied().collect();
                let new: Vec<Ipv4Addr> = cloud.difference(&known).copied().collect();
                let mut dropped = Vec::new();
                for ip in gone {
                    match slot.units.get(&ip).map(|u| &u.state) {
                        Some(UnitState::InUse(pod) | UnitState::Reserved(pod)) => {
                            report
                                .lost_resources
                                .push((pod.clone(), resource(kind, &eni.id, ip)));
                        }
                        _ => dropped.push(ip),
                    }
                }
                report.dropped_ips += dropped.len();
                self.drop_units(&eni.id, &dropped);
                if let Some(slot) = self.enis.get_mut(&eni.id) {
                    for ip in &new {
                        slot.units
                            .insert(*ip, crate::state::Unit::new(None, UnitState::Pending));
                    }
                    for v6 in &eni.ipv6 {
                        if !slot.units.values().any(|u| u.v6 == Some(*v6))
                            && !slot.spare_v6.contains(v6)
                        {
                            slot.spare_v6.push(*v6);
                        }
                    }
                    slot.pair_v6(stack);
                    slot.activate(stack);
                }
                report.adopted_ips += new.len();
            } else if matches!(eni.status, EniStatus::Available | EniStatus::Detaching) {
                // Detached behind the pool's back.
                let bound: Vec<(PodKey, Ipv4Addr)> = slot
                    .units
                    .iter()
                    .filter_map(|(ip, u)| match &u.state {
                        UnitState::InUse(p) | UnitState::Reserved(p) => Some((p.clone(), *ip)),
                        _ => None,
                    })
                    .collect();
                if bound.is_empty() {
                    self.drop_eni(&eni.id);
                    self.orphans.insert(
                        eni.id.clone(),
                        Orphan {
                            delete_after: now,
                            attached: false,
                            busy: false,
                        },
                    );
                    report.orphan_enis.push(eni.id.clone());
                } else {
                    for (pod, ip) in bound {
                        report
                            .lost_resources
                            .push((pod, resource(kind, &eni.id, ip)));
                    }
                }
            }
        }
        let vanished: Vec<String> = self
            .enis
            .values()
            .filter(|s| {
                !seen.contains(s.id.as_str())
                    && epochs.get(&s.id) == Some(&s.epoch)
                    && !s.busy
                    && s.phase == Phase::Ready
            })
            .map(|s| s.id.clone())
            .collect();
        for id in vanished {
            if let Some(slot) = self.enis.get(&id) {
                let kind = slot.role.kind();
                for (ip, u) in &slot.units {
                    if let UnitState::InUse(pod) | UnitState::Reserved(pod) = &u.state {
                        report
                            .lost_resources
                            .push((pod.clone(), resource(kind, &id, *ip)));
                    }
                }
            }
            tracing::warn!(eni_id = %id, "ENI vanished from the cloud");
            self.drop_eni(&id);
            report.vanished_enis.push(id);
        }
        self.orphans
            .retain(|id, o| o.busy || seen.contains(id.as_str()));
    }
}

fn resource(kind: ResourceKind, eni_id: &str, ip: Ipv4Addr) -> ResourceId {
    match kind {
        ResourceKind::SharedIp => ResourceId::Ip {
            eni_id: eni_id.to_owned(),
            ip,
        },
        ResourceKind::ExclusiveEni => ResourceId::Eni {
            eni_id: eni_id.to_owned(),
        },
    }
}
