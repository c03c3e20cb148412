//! An in-memory kernel for unit tests: namespaces with links, addresses, routes, rules and
//! neighbours, following the kernel's rules where drivers depend on them (EEXIST/ENOENT, veth
//! pairs dying together, ipvlan children dying with their parent, links moving between
//! namespaces losing their addresses and routes, routes needing an up link, renames needing a
//! down link), and recording every call.
//!
//! ```
//! use cnikit_netns_setup::netlink::{fake::FakeKernel, NetlinkHandle};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let kernel = FakeKernel::new();
//! let (node_ns, node) = kernel.namespace("node");
//! kernel.add_physical(&node_ns, "eth1", "02:00:00:00:00:01".parse().unwrap(), 9000);
//! assert_eq!(node.link_by_name("eth1").await.unwrap().unwrap().mtu, 9000);
//! assert!(kernel.calls().iter().any(|c| c.operation == "get link eth1"));
//! # });
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;

use super::{
    Address, Connector, Family, Handle, IpVlanMode, Link, LinkChange, LinkKind, MacAddr, Neighbour,
    NetlinkHandle, NewLink, NlResult, Route, Rule,
};
use crate::{
    Error, Result,
    error::NetlinkError,
    netns::{Netns, NetnsId},
};

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The namespace's label.
    pub netns: String,
    /// What was asked, e.g. `add link cnk0123456789a` or `get link eth0`.
    pub operation: String,
}

impl Call {
    /// Whether the call changes state (add, set or delete).
    #[must_use]
    pub fn is_change(&self) -> bool {
        ["add ", "set ", "delete "]
            .iter()
            .any(|p| self.operation.starts_with(p))
    }
}

#[derive(Clone, Debug)]
struct FakeLink {
    link: Link,
    /// A veth's peer: namespace and index.
    peer: Option<(NetnsId, u32)>,
    /// An ipvlan's parent: namespace and index.
    parent: Option<(NetnsId, u32)>,
}

#[derive(Debug, Default)]
struct FakeNs {
    label: String,
    links: BTreeMap<u32, FakeLink>,
    addresses: Vec<Address>,
    routes: Vec<Route>,
    rules: Vec<Rule>,
    neighbours: Vec<Neighbour>,
    next_index: u32,
}

impl FakeNs {
    fn by_name(&self, name: &str) -> Option<&FakeLink> {
        self.links.values().find(|l| l.link.name == name)
    }

    fn forget_link_objects(&mut self, index: u32) {
        self.addresses.retain(|a| a.index != index);
        self.routes.retain(|r| r.oif != Some(index));
        self.neighbours.retain(|n| n.index != index);
    }

    fn new_index(&mut self) -> u32 {
        self.next_index += 1;
        self.next_index
    }
}

#[derive(Debug, Default)]
struct State {
    namespaces: HashMap<NetnsId, FakeNs>,
    calls: Vec<Call>,
    no_ipvlan: bool,
    next_mac: u32,
}

/// The fake kernel. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct FakeKernel {
    state: Mutex<State>,
}

/// A snapshot of one fake namespace, for before/after comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSnapshot {
    /// Links, by index.
    pub links: Vec<Link>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Rules.
    pub rules: Vec<Rule>,
    /// Neighbours.
    pub neighbours: Vec<Neighbour>,
}

fn err<T>(operation: impl Into<String>, errno: i32) -> NlResult<T> {
    Err(NetlinkError::from_errno(operation, errno))
}

impl FakeKernel {
    /// An empty kernel, with ipvlan support.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes ipvlan creation fail with `EOPNOTSUPP` (like this kernel build) or work again.
    pub fn set_ipvlan_supported(&self, supported: bool) {
        self.lock().no_ipvlan = !supported;
    }

    /// A new namespace with `lo`, and a handle in it.
    pub fn namespace(self: &Arc<Self>, label: &str) -> (Netns, Handle) {
        let netns = Netns::fake(label);
        self.register(&netns);
        let handle: Handle = Arc::new(FakeNetlink {
            kernel: Arc::clone(self),
            netns: netns.clone(),
        });
        (netns, handle)
    }

    fn register(&self, netns: &Netns) {
        let mut state = self.lock();
        let mut ns = FakeNs {
            label: netns.to_string().trim_start_matches("fake:").to_owned(),
            ..FakeNs::default()
        };
        let index = ns.new_index();
        ns.links.insert(
            index,
            FakeLink {
                link: Link {
                    index,
                    name: "lo".to_owned(),
                    kind: None,
                    mac: Some(MacAddr([0; 6])),
                    mtu: 65536,
                    up: true,
                    noarp: true,
                    alias: None,
                    parent: None,
                    parent_netnsid: None,
                },
                peer: None,
                parent: None,
            },
        );
        state.namespaces.insert(netns.id(), ns);
    }

    /// A connector for this kernel's namespaces.
    #[must_use]
    pub fn connector(self: &Arc<Self>) -> Arc<dyn Connector> {
        Arc::new(FakeConnector {
            kernel: Arc::clone(self),
        })
    }

    /// Adds a device without a kind (a physical NIC: the ENI stand-in), down. Returns its index.
    pub fn add_physical(&self, netns: &Netns, name: &str, mac: MacAddr, mtu: u32) -> u32 {
        let mut state = self.lock();
        let ns = state
            .namespaces
            .get_mut(&netns.id())
            .expect("invariant: fake namespaces are registered when created");
        let index = ns.new_index();
        ns.links.insert(
            index,
            FakeLink {
                link: Link {
                    index,
                    name: name.to_owned(),
                    kind: None,
                    mac: Some(mac),
                    mtu,
                    up: false,
                    noarp: false,
                    alias: None,
                    parent: None,
                    parent_netnsid: None,
                },
                peer: None,
                parent: None,
            },
        );
        index
    }

    /// Every call so far.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The state of `netns`.
    #[must_use]
    pub fn snapshot(&self, netns: &Netns) -> FakeSnapshot {
        let state = self.lock();
        let ns = state.namespaces.get(&netns.id());
        FakeSnapshot {
            links: ns
                .map(|n| n.links.values().map(|l| l.link.clone()).collect())
                .unwrap_or_default(),
            addresses: ns.map(|n| n.addresses.clone()).unwrap_or_default(),
            routes: ns.map(|n| n.routes.clone()).unwrap_or_default(),
            rules: ns.map(|n| n.rules.clone()).unwrap_or_default(),
            neighbours: ns.map(|n| n.neighbours.clone()).unwrap_or_default(),
        }
    }

    /// Destroys `netns` as the kernel does when its last reference goes: virtual links die (a
    /// veth's peer with them), devices without a kind move to `to` under their name.
    pub fn destroy_namespace(&self, netns: &Netns, to: &Netns) {
        let mut state = self.lock();
        let Some(ns) = state.namespaces.remove(&netns.id()) else {
            return;
        };
        for fl in ns.links.into_values() {
            if let Some((peer_ns, peer)) = fl.peer {
                remove_link(&mut state, peer_ns, peer);
            }
            if fl.link.kind.is_none()
                && fl.link.name != "lo"
                && let Some(target) = state.namespaces.get_mut(&to.id())
            {
                let index = target.new_index();
                let mut link = fl.link;
                link.index = index;
                link.up = false;
                target.links.insert(
                    index,
                    FakeLink {
                        link,
                        peer: None,
                        parent: None,
                    },
                );
            }
        }
    }
}

/// Removes a link and what hangs off it: its objects, its veth peer, its ipvlan children.
fn remove_link(state: &mut State, netns: NetnsId, index: u32) {
    let Some(ns) = state.namespaces.get_mut(&netns) else {
        return;
    };
    let Some(fl) = ns.links.remove(&index) else {
        return;
    };
    ns.forget_link_objects(index);
    if let Some((peer_ns, peer)) = fl.peer {
        remove_link(state, peer_ns, peer);
    }
    let children: Vec<(NetnsId, u32)> = state
        .namespaces
        .iter()
        .flat_map(|(id, ns)| {
            ns.links
                .values()
                .filter(|l| l.parent == Some((netns, index)))
                .map(|l| (*id, l.link.index))
                .collect::<Vec<_>>()
        })
        .collect();
    for (child_ns, child) in children {
        remove_link(state, child_ns, child);
    }
}

#[derive(Debug)]
struct FakeConnector {
    kernel: Arc<FakeKernel>,
}

impl Connector for FakeConnector {
    fn connect(&self, netns: &Netns) -> Result<Handle> {
        if !self.kernel.lock().namespaces.contains_key(&netns.id()) {
            return Err(Error::netns(
                netns.to_string(),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not a namespace of this fake kernel",
                ),
            ));
        }
        Ok(Arc::new(FakeNetlink {
            kernel: Arc::clone(&self.kernel),
            netns: netns.clone(),
        }))
    }

    fn scratch(&self) -> Result<Netns> {
        let netns = Netns::fake("scratch");
        self.kernel.register(&netns);
        Ok(netns)
    }
}

/// A handle in one fake namespace.
#[derive(Debug)]
pub struct FakeNetlink {
    kernel: Arc<FakeKernel>,
    netns: Netns,
}

impl FakeNetlink {
    /// Records the call and runs `f` on the state.
    fn with<T>(
        &self,
        operation: String,
        f: impl FnOnce(&mut State, NetnsId) -> NlResult<T>,
    ) -> NlResult<T> {
        let mut state = self.kernel.lock();
        let label = state
            .namespaces
            .get(&self.netns.id())
            .map(|n| n.label.clone())
            .unwrap_or_default();
        state.calls.push(Call {
            netns: label,
            operation: operation.clone(),
        });
        if !state.namespaces.contains_key(&self.netns.id()) {
            return err(operation, libc::EINVAL);
        }
        f(&mut state, self.netns.id())
    }
}

fn ns_mut(state: &mut State, id: NetnsId) -> &mut FakeNs {
    state
        .namespaces
        .get_mut(&id)
        .expect("invariant: checked by FakeNetlink::with")
}

fn next_mac(state: &mut State) -> MacAddr {
    state.next_mac += 1;
    let [_, b, c, d] = state.next_mac.to_be_bytes();
    MacAddr([0x02, 0xfa, 0x4e, b, c, d])
}

#[async_trait]
impl NetlinkHandle for FakeNetlink {
    fn netns(&self) -> &Netns {
        &self.netns
    }

    async fn links(&self) -> NlResult<Vec<Link>> {
        self.with("dump links".to_owned(), |s, id| {
            Ok(ns_mut(s, id)
                .links
                .values()
                .map(|l| l.link.clone())
                .collect())
        })
    }

    async fn link_by_name(&self, name: &str) -> NlResult<Option<Link>> {
        self.with(format!("get link {name}"), |s, id| {
            Ok(ns_mut(s, id).by_name(name).map(|l| l.link.clone()))
        })
    }

    async fn link_by_index(&self, index: u32) -> NlResult<Option<Link>> {
        self.with(format!("get link #{index}"), |s, id| {
            Ok(ns_mut(s, id).links.get(&index).map(|l| l.link.clone()))
        })
    }

    async fn add_link(&self, new: &NewLink) -> NlResult<()> {
        let op = format!("add link {}", new.name());
        self.with(op.clone(), |s, id| match new {
            NewLink::Veth {
                name,
                mtu,
                mac,
                up,
                peer,
            } => {
                let peer_id = peer.netns.as_ref().map_or(id, Netns::id);
                if !s.namespaces.contains_key(&peer_id) {
                    return err(op, libc::EINVAL);
                }
                if ns_mut(s, id).by_name(name).is_some()
                    || ns_mut(s, peer_id).by_name(&peer.name).is_some()
                    || (peer_id == id && peer.name == *name)
                {
                    return err(op, libc::EEXIST);
                }
                let mac_a = mac.unwrap_or_else(|| next_mac(s));
                let mac_b = peer.mac.unwrap_or_else(|| next_mac(s));
                let a = ns_mut(s, id).new_index();
                let b = ns_mut(s, peer_id).new_index();
                let other_ns = (peer_id != id).then_some(0);
                let make = |index, name: &str, mtu: Option<u32>, mac, up, peer: u32| Link {
                    index,
                    name: name.to_owned(),
                    kind: Some(LinkKind::Veth),
                    mac: Some(mac),
                    mtu: mtu.unwrap_or(1500),
                    up,
                    noarp: false,
                    alias: None,
                    parent: Some(peer),
                    parent_netnsid: other_ns,
                };
                let la = make(a, name, *mtu, mac_a, *up, b);
                let lb = make(b, &peer.name, peer.mtu, mac_b, peer.up, a);
                ns_mut(s, id).links.insert(
                    a,
                    FakeLink {
                        link: la,
                        peer: Some((peer_id, b)),
                        parent: None,
                    },
                );
                ns_mut(s, peer_id).links.insert(
                    b,
                    FakeLink {
                        link: lb,
                        peer: Some((id, a)),
                        parent: None,
                    },
                );
                Ok(())
            }
            NewLink::IpVlan {
                name,
                parent,
                mode,
                netns,
                mtu,
                up,
                noarp,
            } => {
                if s.no_ipvlan {
                    return err(op, libc::EOPNOTSUPP);
                }
                let Some(parent_link) = ns_mut(s, id).links.get(parent).map(|l| l.link.clone())
                else {
                    return err(op, libc::ENODEV);
                };
                if *mode != IpVlanMode::L2 && *mode != IpVlanMode::L3 {
                    return err(op, libc::EINVAL);
                }
                let target = netns.as_ref().map_or(id, Netns::id);
                if !s.namespaces.contains_key(&target) {
                    return err(op, libc::EINVAL);
                }
                if ns_mut(s, target).by_name(name).is_some() {
                    return err(op, libc::EEXIST);
                }
                let mtu = mtu.unwrap_or(parent_link.mtu);
                if mtu > parent_link.mtu {
                    return err(op, libc::EINVAL);
                }
                let index = ns_mut(s, target).new_index();
                ns_mut(s, target).links.insert(
                    index,
                    FakeLink {
                        link: Link {
                            index,
                            name: name.clone(),
                            kind: Some(LinkKind::IpVlan),
                            mac: parent_link.mac,
                            mtu,
                            up: *up,
                            noarp: *noarp,
                            alias: None,
                            parent: Some(*parent),
                            parent_netnsid: (target != id).then_some(0),
                        },
                        peer: None,
                        parent: Some((id, *parent)),
                    },
                );
                Ok(())
            }
        })
    }

    async fn set_link(&self, change: &LinkChange) -> NlResult<()> {
        let op = format!("set link #{}", change.index);
        self.with(op.clone(), |s, id| {
            let Some(mut fl) = ns_mut(s, id).links.get(&change.index).cloned() else {
                return err(op, libc::ENODEV);
            };
            let mut home = id;
            if let Some(target) = change.netns.as_ref().map(Netns::id)
                && target != id
            {
                if !s.namespaces.contains_key(&target) {
                    return err(op, libc::EINVAL);
                }
                let tns = ns_mut(s, target);
                if tns.by_name(&fl.link.name).is_some() {
                    let free = change
                        .name
                        .as_ref()
                        .is_some_and(|n| tns.by_name(n).is_none());
                    if !free {
                        return err(op, libc::EEXIST);
                    }
                    fl.link
                        .name
                        .clone_from(change.name.as_ref().expect("checked above"));
                }
                let index = if tns.links.contains_key(&fl.link.index) {
                    tns.new_index()
                } else {
                    tns.next_index = tns.next_index.max(fl.link.index);
                    fl.link.index
                };
                let old = ns_mut(s, id);
                old.links.remove(&change.index);
                old.forget_link_objects(change.index);
                fl.link.index = index;
                fl.link.up = false;
                // Relationships across namespaces: keep it simple, a moved link is on its own
                // side of any pair; re-point a veth peer at the new location.
                if let Some((peer_ns, peer)) = fl.peer
                    && let Some(p) = s
                        .namespaces
                        .get_mut(&peer_ns)
                        .and_then(|n| n.links.get_mut(&peer))
                {
                    p.peer = Some((target, index));
                    p.link.parent = Some(index);
                    p.link.parent_netnsid = (peer_ns != target).then_some(0);
                }
                if let Some((peer_ns, _)) = fl.peer {
                    fl.link.parent_netnsid = (peer_ns != target).then_some(0);
                }
                if let Some((parent_ns, _)) = fl.parent {
                    fl.link.parent_netnsid = (parent_ns != target).then_some(0);
                }
                home = target;
            }
            let ns = ns_mut(s, home);
            if let Some(name) = &change.name
                && *name != fl.link.name
            {
                if fl.link.up {
                    return err(op, libc::EBUSY);
                }
                if ns.by_name(name).is_some() {
                    return err(op, libc::EEXIST);
                }
                fl.link.name.clone_from(name);
            }
            if let Some(mtu) = change.mtu {
                if !(68..=65535).contains(&mtu) {
                    return err(op, libc::EINVAL);
                }
                fl.link.mtu = mtu;
            }
            if let Some(mac) = change.mac {
                fl.link.mac = Some(mac);
            }
            if let Some(alias) = &change.alias {
                fl.link.alias = (!alias.is_empty()).then(|| alias.clone());
            }
            if let Some(arp) = change.arp {
                fl.link.noarp = !arp;
            }
            if let Some(up) = change.up {
                if !up && fl.link.up {
                    // Taking a link down flushes the routes through it.
                    let index = fl.link.index;
                    ns.routes.retain(|r| r.oif != Some(index));
                }
                fl.link.up = up;
            }
            ns.links.insert(fl.link.index, fl);
            Ok(())
        })
    }

    async fn del_link(&self, index: u32) -> NlResult<()> {
        let op = format!("delete link #{index}");
        self.with(op.clone(), |s, id| {
            if !ns_mut(s, id).links.contains_key(&index) {
                return err(op, libc::ENODEV);
            }
            remove_link(s, id, index);
            Ok(())
        })
    }

    async fn addresses(&self, index: Option<u32>) -> NlResult<Vec<Address>> {
        self.with("dump addresses".to_owned(), |s, id| {
            Ok(ns_mut(s, id)
                .addresses
                .iter()
                .filter(|a| index.is_none_or(|i| i == a.index))
                .copied()
                .collect())
        })
    }

    async fn add_address(&self, address: &Address) -> NlResult<()> {
        let op = format!("add address {} on #{}", address.address, address.index);
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            if !ns.links.contains_key(&address.index) {
                return err(op, libc::ENODEV);
            }
            if ns.addresses.iter().any(|a| a.same(address)) {
                return err(op, libc::EEXIST);
            }
            ns.addresses.push(*address);
            Ok(())
        })
    }

    async fn del_address(&self, address: &Address) -> NlResult<()> {
        let op = format!("delete address {} on #{}", address.address, address.index);
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            let before = ns.addresses.len();
            ns.addresses.retain(|a| !a.same(address));
            if ns.addresses.len() == before {
                return err(op, libc::EADDRNOTAVAIL);
            }
            Ok(())
        })
    }

    async fn routes(&self, family: Family, table: Option<u32>) -> NlResult<Vec<Route>> {
        self.with(format!("dump {family} routes"), |s, id| {
            Ok(ns_mut(s, id)
                .routes
                .iter()
                .filter(|r| r.family() == family && table.is_none_or(|t| t == r.table))
                .copied()
                .collect())
        })
    }

    async fn add_route(&self, route: &Route, replace: bool) -> NlResult<()> {
        let op = format!("add route {route}");
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            if let Some(oif) = route.oif {
                let Some(link) = ns.links.get(&oif) else {
                    return err(op, libc::ENODEV);
                };
                if !link.link.up {
                    return err(op, libc::ENETDOWN);
                }
            }
            if let Some(gw) = route.gateway
                && Family::of(gw) != route.family()
            {
                return err(op, libc::EINVAL);
            }
            if let Some(existing) = ns.routes.iter_mut().find(|r| r.same_key(route)) {
                if !replace {
                    return err(op, libc::EEXIST);
                }
                *existing = *route;
                return Ok(());
            }
            ns.routes.push(*route);
            Ok(())
        })
    }

    async fn del_route(&self, route: &Route) -> NlResult<()> {
        let op = format!("delete route {route}");
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            let Some(pos) = ns.routes.iter().position(|r| {
                r.same_key(route)
                    && route.oif.is_none_or(|o| r.oif == Some(o))
                    && route.gateway.is_none_or(|g| r.gateway == Some(g))
            }) else {
                return err(op, libc::ESRCH);
            };
            ns.routes.remove(pos);
            Ok(())
        })
    }

    async fn rules(&self, family: Family) -> NlResult<Vec<Rule>> {
        self.with(format!("dump {family} rules"), |s, id| {
            Ok(ns_mut(s, id)
                .rules
                .iter()
                .filter(|r| r.family == family)
                .cloned()
                .collect())
        })
    }

    async fn add_rule(&self, rule: &Rule) -> NlResult<()> {
        let op = format!("add rule {rule}");
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            if ns.rules.contains(rule) {
                return err(op, libc::EEXIST);
            }
            let at = ns
                .rules
                .iter()
                .position(|r| r.priority > rule.priority)
                .unwrap_or(ns.rules.len());
            ns.rules.insert(at, rule.clone());
            Ok(())
        })
    }

    async fn del_rule(&self, rule: &Rule) -> NlResult<()> {
        let op = format!("delete rule {rule}");
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            let Some(pos) = ns.rules.iter().position(|r| {
                r.same_selector(rule) && rule.table.is_none_or(|t| r.table == Some(t))
            }) else {
                return err(op, libc::ENOENT);
            };
            ns.rules.remove(pos);
            Ok(())
        })
    }

    async fn neighbours(&self, family: Family, index: Option<u32>) -> NlResult<Vec<Neighbour>> {
        self.with(format!("dump {family} neighbours"), |s, id| {
            Ok(ns_mut(s, id)
                .neighbours
                .iter()
                .filter(|n| Family::of(n.ip) == family && index.is_none_or(|i| i == n.index))
                .copied()
                .collect())
        })
    }

    async fn add_neighbour(&self, neighbour: &Neighbour, replace: bool) -> NlResult<()> {
        let op = format!("add neighbour {} on #{}", neighbour.ip, neighbour.index);
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            if !ns.links.contains_key(&neighbour.index) {
                return err(op, libc::ENODEV);
            }
            if let Some(existing) = ns
                .neighbours
                .iter_mut()
                .find(|n| n.index == neighbour.index && n.ip == neighbour.ip)
            {
                if !replace {
                    return err(op, libc::EEXIST);
                }
                *existing = *neighbour;
                return Ok(());
            }
            ns.neighbours.push(*neighbour);
            Ok(())
        })
    }

    async fn del_neighbour(&self, neighbour: &Neighbour) -> NlResult<()> {
        let op = format!("delete neighbour {} on #{}", neighbour.ip, neighbour.index);
        self.with(op.clone(), |s, id| {
            let ns = ns_mut(s, id);
            let before = ns.neighbours.len();
            ns.neighbours
                .retain(|n| !(n.index == neighbour.index && n.ip == neighbour.ip));
            if ns.neighbours.len() == before {
                return err(op, libc::ENOENT);
            }
            Ok(())
        })
    }
}
