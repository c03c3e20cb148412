//! Declarative wiring: a driver describes the objects a pod needs as a [`Plan`]; one executor
//! applies it (idempotently, rolling back on failure), checks it for drift, and tears it down.
//!
//! Every step is either *pod-owned* (created by setup, removed by teardown, undone on failure) or
//! *shared* (node-level state several pods rely on, such as an ENI's route table or the IPVLAN
//! host interface: ensured by setup, never removed by a pod's teardown or rollback; see
//! [`crate::PodDriver::release_eni`]).

use std::{
    collections::{HashMap, hash_map::Entry},
    net::IpAddr,
};

use ipnetwork::IpNetwork;

use crate::{
    drift::Drift,
    error::{Error, NetlinkError, Side},
    netlink::{
        Address, Family, IpVlanMode, Link, LinkChange, LinkKind, MacAddr, Neighbour, NetlinkHandle,
        NewLink, Route, Rule, Scope, VethPeer,
    },
};

/// How a link comes to exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Already there (an ENI): only its properties are ensured; never created or deleted.
    Existing,
    /// A veth created from this side; its peer `peer` is the `VethPeer` step on the other side.
    Veth { peer: String },
    /// The far end of a veth created by another step (removed with it).
    VethPeer,
    /// An L2 ipvlan sub-interface of the node-side link `parent`, created on this step's side.
    /// With `staging`, it is created under that name and then renamed: the kernel checks a new
    /// link's name in the namespace of the request (the node), where the pod's name (`eth0`) may
    /// well exist.
    IpVlan {
        parent: String,
        staging: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkSpec {
    pub name: String,
    pub origin: Origin,
    pub mtu: Option<u32>,
    pub up: bool,
    /// `Some(false)`: NOARP.
    pub arp: Option<bool>,
    pub mac: Option<MacAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Object {
    Link(LinkSpec),
    Address {
        link: String,
        address: IpNetwork,
        scope: Scope,
    },
    Route {
        link: String,
        destination: IpNetwork,
        gateway: Option<IpAddr>,
        table: u32,
    },
    Rule(Rule),
    Neighbour {
        link: String,
        ip: IpAddr,
        mac: MacAddr,
    },
}

impl Object {
    /// The link an address, route or neighbour hangs off.
    fn link(&self) -> Option<&str> {
        match self {
            Self::Address { link, .. }
            | Self::Route { link, .. }
            | Self::Neighbour { link, .. } => Some(link),
            Self::Link(_) | Self::Rule(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub side: Side,
    pub shared: bool,
    pub object: Object,
}

/// The objects of one pod's wiring, in creation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub(crate) fn push(&mut self, side: Side, shared: bool, object: Object) {
        self.steps.push(Step {
            side,
            shared,
            object,
        });
    }

    pub(crate) fn pod(&mut self, object: Object) {
        self.push(Side::Pod, false, object);
    }

    pub(crate) fn node(&mut self, object: Object) {
        self.push(Side::Node, false, object);
    }

    pub(crate) fn shared(&mut self, object: Object) {
        self.push(Side::Node, true, object);
    }

    fn link_spec(&self, side: Side, name: &str) -> Option<&LinkSpec> {
        self.steps.iter().find_map(|s| match &s.object {
            Object::Link(spec) if s.side == side && spec.name == name => Some(spec),
            _ => None,
        })
    }

    /// Only the pod's own rules (the node-side objects that name its addresses, not a link).
    pub(crate) fn pod_rules_only(&self) -> Self {
        Self {
            steps: self
                .steps
                .iter()
                .filter(|s| !s.shared && matches!(s.object, Object::Rule(_)))
                .cloned()
                .collect(),
        }
    }

    /// Only the shared steps.
    pub(crate) fn shared_only(&self) -> Self {
        Self {
            steps: self.steps.iter().filter(|s| s.shared).cloned().collect(),
        }
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Objects created.
    pub created: usize,
    /// Objects that existed and were corrected (MTU, state, next hop, neighbour MAC, conflicting
    /// rules removed).
    pub changed: usize,
    /// Objects already exactly right.
    pub unchanged: usize,
}

impl Report {
    /// Nothing was created or changed: the wiring was already complete.
    #[must_use]
    pub fn is_noop(&self) -> bool {
        self.created == 0 && self.changed == 0
    }
}

#[derive(Debug)]
enum Undo {
    Link(Side, String),
    Address(Side, Address),
    Route(Side, Route),
    Rule(Rule),
    Neighbour(Side, Neighbour),
}

pub(crate) fn other(side: Side) -> Side {
    match side {
        Side::Node => Side::Pod,
        Side::Pod => Side::Node,
    }
}

/// Runs plans against a node handle and (when the pod namespace exists) a pod handle.
pub(crate) struct Executor<'a> {
    node: &'a dyn NetlinkHandle,
    pod: Option<&'a dyn NetlinkHandle>,
    links: HashMap<(Side, String), Option<Link>>,
    rules: HashMap<Family, Vec<Rule>>,
    undo: Vec<Undo>,
    report: Report,
}

type StepResult<T> = Result<T, Error>;

impl<'a> Executor<'a> {
    /// Tells the executor about a node link already read (saves asking again).
    pub(crate) fn knowing(mut self, link: Link) -> Self {
        self.links
            .insert((Side::Node, link.name.clone()), Some(link));
        self
    }

    pub(crate) fn new(node: &'a dyn NetlinkHandle, pod: Option<&'a dyn NetlinkHandle>) -> Self {
        Self {
            node,
            pod,
            links: HashMap::new(),
            rules: HashMap::new(),
            undo: Vec::new(),
            report: Report::default(),
        }
    }

    fn handle(&self, side: Side) -> StepResult<&'a dyn NetlinkHandle> {
        match side {
            Side::Node => Ok(self.node),
            Side::Pod => self.pod.ok_or_else(|| Error::Netns {
                what: "pod".to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the pod's network namespace is not available",
                ),
            }),
        }
    }

    async fn link(&mut self, side: Side, name: &str) -> StepResult<Option<Link>> {
        if let Some(cached) = self.links.get(&(side, name.to_owned())) {
            return Ok(cached.clone());
        }
        let found = self
            .handle(side)?
            .link_by_name(name)
            .await
            .map_err(|e| Error::netlink(side, e))?;
        self.links.insert((side, name.to_owned()), found.clone());
        Ok(found)
    }

    async fn required_link(&mut self, side: Side, name: &str) -> StepResult<Link> {
        self.link(side, name).await?.ok_or_else(|| {
            Error::netlink(
                side,
                NetlinkError::from_errno(format!("find link {name}"), libc::ENODEV),
            )
        })
    }

    fn forget(&mut self, side: Side, name: &str) {
        self.links.remove(&(side, name.to_owned()));
    }

    async fn rules(&mut self, family: Family) -> StepResult<&mut Vec<Rule>> {
        if !self.rules.contains_key(&family) {
            let rules = self
                .node
                .rules(family)
                .await
                .map_err(|e| Error::netlink(Side::Node, e))?;
            self.rules.insert(family, rules);
        }
        Ok(self.rules.entry(family).or_default())
    }

    // ---- apply -------------------------------------------------------------------------------

    /// Applies `plan`; on failure undoes every pod-owned object this call created and returns
    /// the error.
    pub(crate) async fn apply(&mut self, plan: &Plan) -> Result<Report, Error> {
        for step in &plan.steps {
            if let Err(e) = self.apply_step(plan, step).await {
                let errors = self.rollback().await;
                return Err(if errors.is_empty() {
                    e
                } else {
                    Error::RollbackFailed {
                        source: Box::new(e),
                        errors,
                    }
                });
            }
        }
        Ok(self.report)
    }

    /// The hardware address of a link, after an apply (usually from the cache).
    pub(crate) async fn mac_of(&mut self, side: Side, name: &str) -> Option<MacAddr> {
        self.link(side, name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.mac)
    }

    /// Undoes what this executor created, newest first; returns what could not be undone.
    pub(crate) async fn rollback(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        while let Some(undo) = self.undo.pop() {
            if let Err((side, e)) = self.undo_one(undo).await
                && !e.is_not_found()
            {
                errors.push(Error::netlink(side, e));
            }
        }
        errors
    }

    async fn undo_one(&mut self, undo: Undo) -> Result<(), (Side, NetlinkError)> {
        let side = match &undo {
            Undo::Link(side, _)
            | Undo::Address(side, _)
            | Undo::Route(side, _)
            | Undo::Neighbour(side, _) => *side,
            Undo::Rule(_) => Side::Node,
        };
        let Ok(handle) = self.handle(side) else {
            return Ok(());
        };
        let tag = |e| (side, e);
        match undo {
            Undo::Link(_, name) => {
                self.forget(side, &name);
                match handle.link_by_name(&name).await.map_err(tag)? {
                    Some(link) => handle.del_link(link.index).await.map_err(tag),
                    None => Ok(()),
                }
            }
            Undo::Address(_, a) => handle.del_address(&a).await.map_err(tag),
            Undo::Route(_, r) => handle.del_route(&r).await.map_err(tag),
            Undo::Rule(r) => handle.del_rule(&r).await.map_err(tag),
            Undo::Neighbour(_, n) => handle.del_neighbour(&n).await.map_err(tag),
        }
    }

    fn record_created(&mut self, step: &Step, undo: Undo) {
        self.report.created += 1;
        if !step.shared {
            self.undo.push(undo);
        }
    }

    async fn apply_step(&mut self, plan: &Plan, step: &Step) -> StepResult<()> {
        let side = step.side;
        let nl = |e| Error::netlink(side, e);
        match &step.object {
            Object::Link(spec) => self.ensure_link(plan, step, spec).await,
            Object::Address {
                link,
                address,
                scope,
            } => {
                let index = self.required_link(side, link).await?.index;
                let a = Address {
                    index,
                    address: *address,
                    scope: *scope,
                };
                match self.handle(side)?.add_address(&a).await {
                    Ok(()) => self.record_created(step, Undo::Address(side, a)),
                    Err(e) if e.is_exists() => self.report.unchanged += 1,
                    Err(e) => return Err(nl(e)),
                }
                Ok(())
            }
            Object::Route {
                link,
                destination,
                gateway,
                table,
            } => {
                let index = self.required_link(side, link).await?.index;
                let route = Route::new(*destination, index, *gateway, *table);
                let handle = self.handle(side)?;
                if step.shared {
                    // Shared routes are there on every setup but the first: look before adding.
                    let existing = handle
                        .routes(route.family(), Some(route.table))
                        .await
                        .map_err(nl)?;
                    if existing.iter().any(|r| r.matches(&route)) {
                        self.report.unchanged += 1;
                        return Ok(());
                    }
                }
                match handle.add_route(&route, false).await {
                    Ok(()) => self.record_created(step, Undo::Route(side, route)),
                    Err(e) if e.is_exists() => {
                        let existing = handle
                            .routes(route.family(), Some(route.table))
                            .await
                            .map_err(nl)?;
                        if existing.iter().any(|r| r.matches(&route)) {
                            self.report.unchanged += 1;
                        } else {
                            handle.add_route(&route, true).await.map_err(nl)?;
                            self.report.changed += 1;
                        }
                    }
                    Err(e) => return Err(nl(e)),
                }
                Ok(())
            }
            Object::Rule(rule) => {
                let node = self.node;
                let rules = self.rules(rule.family).await?;
                if rules.contains(rule) {
                    self.report.unchanged += 1;
                    return Ok(());
                }
                // Same priority and selector, another table: a stale rule (e.g. the pod IP moved
                // to another ENI) that would shadow ours.
                let stale: Vec<Rule> = rules
                    .iter()
                    .filter(|r| r.same_selector(rule))
                    .cloned()
                    .collect();
                for r in &stale {
                    match node.del_rule(r).await {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(Error::netlink(Side::Node, e)),
                    }
                }
                let changed = !stale.is_empty();
                let rules = self.rules(rule.family).await?;
                rules.retain(|r| !r.same_selector(rule));
                match node.add_rule(rule).await {
                    Ok(()) => {
                        rules.push(rule.clone());
                        if changed {
                            self.report.changed += 1;
                            if !step.shared {
                                self.undo.push(Undo::Rule(rule.clone()));
                            }
                        } else {
                            self.record_created(step, Undo::Rule(rule.clone()));
                        }
                    }
                    Err(e) if e.is_exists() => self.report.unchanged += 1,
                    Err(e) => return Err(Error::netlink(Side::Node, e)),
                }
                Ok(())
            }
            Object::Neighbour { link, ip, mac } => {
                let index = self.required_link(side, link).await?.index;
                let n = Neighbour {
                    index,
                    ip: *ip,
                    mac: Some(*mac),
                    permanent: true,
                };
                let handle = self.handle(side)?;
                match handle.add_neighbour(&n, false).await {
                    Ok(()) => self.record_created(step, Undo::Neighbour(side, n)),
                    Err(e) if e.is_exists() => {
                        let existing = handle
                            .neighbours(Family::of(*ip), Some(index))
                            .await
                            .map_err(nl)?;
                        if existing
                            .iter()
                            .any(|x| x.ip == *ip && x.mac == Some(*mac) && x.permanent)
                        {
                            self.report.unchanged += 1;
                        } else {
                            handle.add_neighbour(&n, true).await.map_err(nl)?;
                            self.report.changed += 1;
                        }
                    }
                    Err(e) => return Err(nl(e)),
                }
                Ok(())
            }
        }
    }

    async fn ensure_link(&mut self, plan: &Plan, step: &Step, spec: &LinkSpec) -> StepResult<()> {
        let side = step.side;
        let link = match &spec.origin {
            Origin::Existing | Origin::VethPeer => self.required_link(side, &spec.name).await?,
            Origin::Veth { peer } => self.ensure_veth(plan, step, spec, peer).await?,
            Origin::IpVlan {
                parent,
                staging: Some(staging),
            } => {
                self.ensure_staged_ipvlan(step, spec, parent, staging)
                    .await?
            }
            Origin::IpVlan {
                parent,
                staging: None,
            } => self.ensure_ipvlan(step, spec, parent).await?,
        };
        self.ensure_properties(side, spec, &link).await
    }

    async fn ensure_properties(
        &mut self,
        side: Side,
        spec: &LinkSpec,
        link: &Link,
    ) -> StepResult<()> {
        let change = LinkChange {
            index: link.index,
            mtu: spec.mtu.filter(|m| *m != link.mtu),
            up: (spec.up && !link.up).then_some(true),
            arp: spec.arp.filter(|arp| *arp == link.noarp),
            mac: spec.mac.filter(|m| link.mac != Some(*m)),
            ..LinkChange::default()
        };
        if change.mtu.is_none()
            && change.up.is_none()
            && change.arp.is_none()
            && change.mac.is_none()
        {
            self.report.unchanged += 1;
            return Ok(());
        }
        self.handle(side)?
            .set_link(&change)
            .await
            .map_err(|e| Error::netlink(side, e))?;
        // What the kernel now has, without asking again.
        let mut updated = link.clone();
        updated.mtu = change.mtu.unwrap_or(link.mtu);
        updated.up |= change.up == Some(true);
        updated.noarp = change.arp.map_or(link.noarp, |arp| !arp);
        updated.mac = change.mac.or(link.mac);
        self.links.insert((side, spec.name.clone()), Some(updated));
        self.report.changed += 1;
        Ok(())
    }

    async fn ensure_veth(
        &mut self,
        plan: &Plan,
        step: &Step,
        spec: &LinkSpec,
        peer_name: &str,
    ) -> StepResult<Link> {
        let side = step.side;
        let peer_side = other(side);
        let peer_spec = plan.link_spec(peer_side, peer_name);
        let peer_netns = self.handle(peer_side)?.netns().clone();
        let new = NewLink::Veth {
            name: spec.name.clone(),
            mtu: spec.mtu,
            mac: spec.mac,
            up: spec.up,
            peer: VethPeer {
                name: peer_name.to_owned(),
                netns: Some(peer_netns),
                mtu: peer_spec.and_then(|p| p.mtu),
                mac: peer_spec.and_then(|p| p.mac),
                // The kernel cannot open a veth end before the pair is linked (ENOTCONN): the
                // peer's own step brings it up.
                up: false,
            },
        };
        for attempt in 0..2 {
            let handle = self.handle(side)?;
            match handle.add_link(&new).await {
                Ok(()) => {
                    self.forget(side, &spec.name);
                    self.forget(peer_side, peer_name);
                    self.report.created += 1;
                    if !step.shared {
                        self.undo.push(Undo::Link(side, spec.name.clone()));
                    }
                    // This end was created with its properties.
                    let link = self.required_link(side, &spec.name).await?;
                    self.report.unchanged += 1;
                    return Ok(link);
                }
                Err(e) if e.is_exists() && attempt == 0 => {}
                Err(e) => return Err(Error::netlink(side, e)),
            }
            // Something is in the way: ours from an earlier run, a stale leftover, or a stranger.
            let this = self.link(side, &spec.name).await?;
            let peer = self.link(peer_side, peer_name).await?;
            match (this, peer) {
                (Some(this), Some(peer))
                    if this.kind == Some(LinkKind::Veth)
                        && peer.kind == Some(LinkKind::Veth)
                        && peer.parent == Some(this.index)
                        && this.parent == Some(peer.index) =>
                {
                    return Ok(this);
                }
                (_, Some(_)) => {
                    return Err(Error::LinkConflict {
                        side: peer_side,
                        name: peer_name.to_owned(),
                        reason: format!("it is not the peer of {}", spec.name),
                    });
                }
                (Some(stale), None) => {
                    // Our deterministic name, peered elsewhere: a leftover of an earlier run.
                    tracing::info!(link = %spec.name, "removing stale host veth");
                    handle
                        .del_link(stale.index)
                        .await
                        .map_err(|e| Error::netlink(side, e))?;
                    self.forget(side, &spec.name);
                    self.report.changed += 1;
                }
                (None, None) => {}
            }
        }
        Err(Error::LinkConflict {
            side,
            name: spec.name.clone(),
            reason: "could not be created".to_owned(),
        })
    }

    async fn ensure_ipvlan(
        &mut self,
        step: &Step,
        spec: &LinkSpec,
        parent: &str,
    ) -> StepResult<Link> {
        let side = step.side;
        let parent_index = self.required_link(Side::Node, parent).await?.index;
        let netns = match side {
            Side::Pod => Some(self.handle(Side::Pod)?.netns().clone()),
            Side::Node => None,
        };
        let new = NewLink::IpVlan {
            name: spec.name.clone(),
            parent: parent_index,
            mode: IpVlanMode::L2,
            netns,
            mtu: spec.mtu,
            up: spec.up,
            noarp: spec.arp == Some(false),
        };
        for attempt in 0..2 {
            match self.node.add_link(&new).await {
                Ok(()) => {
                    self.forget(side, &spec.name);
                    self.report.created += 1;
                    if !step.shared {
                        self.undo.push(Undo::Link(side, spec.name.clone()));
                    }
                    let link = self.required_link(side, &spec.name).await?;
                    self.report.unchanged += 1;
                    return Ok(link);
                }
                Err(e) if e.is_exists() && attempt == 0 => {}
                Err(e) => return Err(Error::netlink(Side::Node, e)),
            }
            let Some(existing) = self.link(side, &spec.name).await? else {
                continue;
            };
            let ours = existing.kind == Some(LinkKind::IpVlan)
                && existing.parent == Some(parent_index)
                && (side == Side::Node) == existing.parent_netnsid.is_none();
            if ours {
                return Ok(existing);
            }
            if side == Side::Pod {
                return Err(Error::LinkConflict {
                    side,
                    name: spec.name.clone(),
                    reason: format!("it is not an ipvlan of {parent}"),
                });
            }
            tracing::info!(link = %spec.name, "replacing stale ipvlan host interface");
            self.node
                .del_link(existing.index)
                .await
                .map_err(|e| Error::netlink(side, e))?;
            self.forget(side, &spec.name);
            self.report.changed += 1;
        }
        Err(Error::LinkConflict {
            side,
            name: spec.name.clone(),
            reason: "could not be created".to_owned(),
        })
    }

    async fn ensure_staged_ipvlan(
        &mut self,
        step: &Step,
        spec: &LinkSpec,
        parent: &str,
        staging: &str,
    ) -> StepResult<Link> {
        let side = step.side;
        let nl = |e| Error::netlink(side, e);
        let parent_index = self.required_link(Side::Node, parent).await?.index;
        if let Some(existing) = self.link(side, &spec.name).await? {
            let ours = existing.kind == Some(LinkKind::IpVlan)
                && existing.parent == Some(parent_index)
                && existing.parent_netnsid.is_some();
            if ours {
                return Ok(existing);
            }
            return Err(Error::LinkConflict {
                side,
                name: spec.name.clone(),
                reason: format!("it is not an ipvlan of {parent}"),
            });
        }
        let handle = self.handle(side)?;
        // Left over by an earlier run interrupted between creation and rename.
        if let Some(stale) = self.link(side, staging).await? {
            handle.del_link(stale.index).await.map_err(nl)?;
            self.forget(side, staging);
            self.report.changed += 1;
        }
        let new = NewLink::IpVlan {
            name: staging.to_owned(),
            parent: parent_index,
            mode: IpVlanMode::L2,
            netns: Some(handle.netns().clone()),
            mtu: spec.mtu,
            up: false,
            noarp: spec.arp == Some(false),
        };
        self.node
            .add_link(&new)
            .await
            .map_err(|e| Error::netlink(Side::Node, e))?;
        self.forget(side, staging);
        self.report.created += 1;
        if !step.shared {
            self.undo.push(Undo::Link(side, staging.to_owned()));
        }
        let created = self.required_link(side, staging).await?;
        handle
            .set_link(&LinkChange {
                index: created.index,
                name: Some(spec.name.clone()),
                ..LinkChange::default()
            })
            .await
            .map_err(nl)?;
        if !step.shared {
            self.undo.pop();
            self.undo.push(Undo::Link(side, spec.name.clone()));
        }
        self.forget(side, staging);
        self.forget(side, &spec.name);
        self.required_link(side, &spec.name).await
    }

    // ---- teardown ----------------------------------------------------------------------------

    /// Removes the objects of `plan` (pod-owned ones, or all when `include_shared`), newest first,
    /// going on past failures. Missing objects count as removed. Returns every failure.
    pub(crate) async fn remove(mut self, plan: &Plan, include_shared: bool) -> Vec<Error> {
        let selected = |s: &&Step| include_shared || !s.shared;
        // Links this removal deletes; what hangs off them goes with them.
        let mut doomed: Vec<(Side, String)> = Vec::new();
        for step in plan.steps.iter().filter(selected) {
            if let Object::Link(spec) = &step.object {
                match &spec.origin {
                    Origin::Existing => {}
                    Origin::Veth { peer } => {
                        doomed.push((step.side, spec.name.clone()));
                        doomed.push((other(step.side), peer.clone()));
                    }
                    Origin::VethPeer | Origin::IpVlan { .. } => {
                        doomed.push((step.side, spec.name.clone()));
                    }
                }
            }
        }
        let mut errors = Vec::new();
        for step in plan.steps.iter().filter(selected).rev() {
            let side = step.side;
            if side == Side::Pod && self.pod.is_none() {
                continue; // the namespace, and everything in it, is gone
            }
            if let Some(link) = step.object.link()
                && doomed.iter().any(|(s, l)| *s == side && l == link)
            {
                continue;
            }
            if let Err(e) = self.remove_step(step).await {
                errors.push(e);
            }
        }
        errors
    }

    async fn remove_step(&mut self, step: &Step) -> StepResult<()> {
        let side = step.side;
        let handle = self.handle(side)?;
        let ok_if_missing = |r: Result<(), NetlinkError>| match r {
            Err(e) if !e.is_not_found() => Err(Error::netlink(side, e)),
            _ => Ok(()),
        };
        match &step.object {
            Object::Link(spec) => {
                let kind = match &spec.origin {
                    // Never ours to delete, or deleted with its peer.
                    Origin::Existing | Origin::VethPeer => return Ok(()),
                    Origin::Veth { .. } => LinkKind::Veth,
                    Origin::IpVlan { .. } => LinkKind::IpVlan,
                };
                if let Origin::IpVlan {
                    staging: Some(staging),
                    ..
                } = &spec.origin
                    && let Some(stale) = self.link(side, staging).await?
                {
                    self.forget(side, staging);
                    ok_if_missing(handle.del_link(stale.index).await)?;
                }
                let Some(link) = self.link(side, &spec.name).await? else {
                    return Ok(());
                };
                self.forget(side, &spec.name);
                if link.kind != Some(kind) {
                    tracing::warn!(%side, link = %spec.name, ?link.kind, "not removing a link that is not ours");
                    return Ok(());
                }
                ok_if_missing(handle.del_link(link.index).await)
            }
            // Any table: the ENI (and so its table number) may be gone; priority and selector
            // are ours alone.
            Object::Rule(rule) => ok_if_missing(
                self.node
                    .del_rule(&Rule {
                        table: None,
                        ..rule.clone()
                    })
                    .await,
            ),
            Object::Address {
                link,
                address,
                scope,
            } => {
                let Some(l) = self.link(side, link).await? else {
                    return Ok(());
                };
                let a = Address {
                    index: l.index,
                    address: *address,
                    scope: *scope,
                };
                ok_if_missing(handle.del_address(&a).await)
            }
            Object::Route {
                link,
                destination,
                gateway,
                table,
            } => {
                let Some(l) = self.link(side, link).await? else {
                    return Ok(());
                };
                let route = Route::new(*destination, l.index, *gateway, *table);
                ok_if_missing(handle.del_route(&route).await)
            }
            Object::Neighbour { link, ip, mac } => {
                let Some(l) = self.link(side, link).await? else {
                    return Ok(());
                };
                let n = Neighbour {
                    index: l.index,
                    ip: *ip,
                    mac: Some(*mac),
                    permanent: true,
                };
                ok_if_missing(handle.del_neighbour(&n).await)
            }
        }
    }

    // ---- check -------------------------------------------------------------------------------

    /// Every difference between `plan` and the kernel.
    pub(crate) async fn check(mut self, plan: &Plan) -> Result<Vec<Drift>, Error> {
        let mut drifts = Vec::new();
        let mut missing: Vec<(Side, String)> = Vec::new();
        let mut routes: HashMap<(Side, Family, u32), Vec<Route>> = HashMap::new();
        let mut neighbours: HashMap<(Side, Family, u32), Vec<Neighbour>> = HashMap::new();
        let mut addresses: HashMap<(Side, u32), Vec<Address>> = HashMap::new();
        for step in &plan.steps {
            let side = step.side;
            if let Some(link) = step.object.link()
                && missing.iter().any(|(s, l)| *s == side && l == link)
            {
                continue;
            }
            let nl = |e| Error::netlink(side, e);
            match &step.object {
                Object::Link(spec) => {
                    let Some(link) = self.link(side, &spec.name).await? else {
                        missing.push((side, spec.name.clone()));
                        drifts.push(Drift::MissingLink {
                            side,
                            name: spec.name.clone(),
                        });
                        continue;
                    };
                    if spec.up && !link.up {
                        drifts.push(Drift::LinkDown {
                            side,
                            name: spec.name.clone(),
                        });
                    }
                    if let Some(mtu) = spec.mtu
                        && mtu != link.mtu
                    {
                        drifts.push(Drift::WrongMtu {
                            side,
                            name: spec.name.clone(),
                            expected: mtu,
                            actual: link.mtu,
                        });
                    }
                    if let Some(mac) = spec.mac
                        && link.mac != Some(mac)
                    {
                        drifts.push(Drift::WrongMac {
                            side,
                            name: spec.name.clone(),
                            expected: mac,
                            actual: link.mac,
                        });
                    }
                }
                Object::Address { link, address, .. } => {
                    let index = self.required_link(side, link).await?.index;
                    if let Entry::Vacant(slot) = addresses.entry((side, index)) {
                        slot.insert(
                            self.handle(side)?
                                .addresses(Some(index))
                                .await
                                .map_err(nl)?,
                        );
                    }
                    let present = addresses
                        .get(&(side, index))
                        .is_some_and(|v| v.iter().any(|a| a.address == *address));
                    if !present {
                        drifts.push(Drift::MissingAddress {
                            side,
                            link: link.clone(),
                            address: *address,
                        });
                    }
                }
                Object::Route {
                    link,
                    destination,
                    gateway,
                    table,
                } => {
                    let index = self.required_link(side, link).await?.index;
                    let route = Route::new(*destination, index, *gateway, *table);
                    let key = (side, route.family(), *table);
                    if let Entry::Vacant(slot) = routes.entry(key) {
                        slot.insert(
                            self.handle(side)?
                                .routes(route.family(), Some(*table))
                                .await
                                .map_err(nl)?,
                        );
                    }
                    let present = routes
                        .get(&key)
                        .is_some_and(|v| v.iter().any(|r| r.matches(&route)));
                    if !present {
                        drifts.push(Drift::MissingRoute {
                            side,
                            link: link.clone(),
                            route,
                        });
                    }
                }
                Object::Rule(rule) => {
                    if !self.rules(rule.family).await?.contains(rule) {
                        drifts.push(Drift::MissingRule {
                            side,
                            rule: rule.clone(),
                        });
                    }
                }
                Object::Neighbour { link, ip, mac } => {
                    let index = self.required_link(side, link).await?.index;
                    let key = (side, Family::of(*ip), index);
                    if let Entry::Vacant(slot) = neighbours.entry(key) {
                        slot.insert(
                            self.handle(side)?
                                .neighbours(Family::of(*ip), Some(index))
                                .await
                                .map_err(nl)?,
                        );
                    }
                    match neighbours
                        .get(&key)
                        .and_then(|v| v.iter().find(|n| n.ip == *ip))
                    {
                        None => drifts.push(Drift::MissingNeighbour {
                            side,
                            link: link.clone(),
                            ip: *ip,
                        }),
                        Some(n) if n.mac != Some(*mac) || !n.permanent => {
                            drifts.push(Drift::WrongNeighbour {
                                side,
                                link: link.clone(),
                                ip: *ip,
                                expected: *mac,
                                actual: n.mac,
                                permanent: n.permanent,
                            });
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(drifts)
    }
}
