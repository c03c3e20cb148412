//! veth + policy routing: the pod's interface is one end of a veth pair; its egress leaves
//! through its ENI by a source rule and the ENI's own table.

use async_trait::async_trait;

use super::{
    EniInfo, Mode, Node, PodDriver, Wired, apply_links, apply_plan, apply_shared, check_plan,
    default_via, find_eni, link_local_gateway, remove_plan, require_eni,
};
use crate::{
    Error, NetlinkError, Result,
    drift::Drift,
    error::Side,
    naming::{
        HOST_VETH_MAC, PRIORITY_FROM_POD, PRIORITY_TO_POD, eni_table, host_veth_name,
        is_host_veth_name, pod_veth_mac, retired_name,
    },
    netlink::{Link, LinkChange, LinkKind, NetlinkHandle, Rule, Scope, TABLE_MAIN, host_route},
    plan::{LinkSpec, Object, Origin, Plan, Report},
    spec::PodNetwork,
};

/// veth pair + policy routing (the fallback that works on every kernel).
///
/// In the pod: `<ifname>` with the pod IP as `/32` (`/128`), a permanent neighbour for the
/// link-local gateway `169.254.1.1` (`fe80::1`) pointing at the host end's fixed MAC, and a
/// default route via that gateway. On the node: `cnk<hash>` with a `/32` route to the pod, rule
/// 512 `to <pod> lookup main` and rule 2048 `from <pod> lookup <ENI table>`; the ENI table
/// (shared by the ENI's pods) holds `default via <vSwitch gateway> dev <ENI> onlink`.
#[derive(Clone, Copy, Debug, Default)]
pub struct VethDriver;

impl VethDriver {
    pub(crate) fn plan(pod: &PodNetwork, eni: &EniInfo) -> Plan {
        let host = host_veth_name(&pod.container_id, &pod.ifname);
        let table = pod.route_table.unwrap_or_else(|| eni_table(eni.index));
        let mtu = Some(pod.mtu.unwrap_or(eni.mtu));
        let mut plan = Plan::default();

        plan.shared(Object::Link(LinkSpec {
            name: eni.name.clone(),
            origin: Origin::Existing,
            mtu: None,
            up: true,
            arp: None,
            mac: None,
        }));
        for gateway in pod.ip_configs().filter_map(|c| c.gateway) {
            for object in default_via(&eni.name, gateway, table) {
                plan.shared(object);
            }
        }

        Self::pair(&mut plan, pod, mtu);
        let pod_mac = pod_veth_mac(&pod.container_id, &pod.ifname);
        for config in pod.ip_configs() {
            let gateway = link_local_gateway(config.family());
            plan.pod(Object::Address {
                link: pod.ifname.clone(),
                address: host_route(config.ip()),
                scope: Scope::Universe,
            });
            plan.pod(Object::Neighbour {
                link: pod.ifname.clone(),
                ip: gateway,
                mac: HOST_VETH_MAC,
            });
            plan.pod(Object::Route {
                link: pod.ifname.clone(),
                destination: config.family().default_route(),
                gateway: Some(gateway),
                table: TABLE_MAIN,
            });
        }
        for config in pod.ip_configs() {
            plan.node(Object::Route {
                link: host.clone(),
                destination: host_route(config.ip()),
                gateway: None,
                table: TABLE_MAIN,
            });
            // No ARP/NDP towards the pod: an IPv6 solicitation could not even be sent while the
            // host end's link-local address is still tentative.
            plan.node(Object::Neighbour {
                link: host.clone(),
                ip: config.ip(),
                mac: pod_mac,
            });
        }
        for config in pod.ip_configs() {
            let ip = host_route(config.ip());
            plan.node(Object::Rule(Rule::to_destination(
                PRIORITY_TO_POD,
                ip,
                TABLE_MAIN,
            )));
            plan.node(Object::Rule(Rule::from_source(
                PRIORITY_FROM_POD,
                ip,
                table,
            )));
        }
        plan
    }

    /// The veth pair's two links (host end with its fixed MAC, pod end with its derived one).
    fn pair(plan: &mut Plan, pod: &PodNetwork, mtu: Option<u32>) {
        plan.node(Object::Link(LinkSpec {
            name: host_veth_name(&pod.container_id, &pod.ifname),
            origin: Origin::Veth {
                peer: pod.ifname.clone(),
            },
            mtu,
            up: true,
            arp: None,
            mac: Some(HOST_VETH_MAC),
        }));
        plan.pod(Object::Link(LinkSpec {
            name: pod.ifname.clone(),
            origin: Origin::VethPeer,
            mtu,
            up: true,
            arp: None,
            mac: Some(pod_veth_mac(&pod.container_id, &pod.ifname)),
        }));
    }

    /// Creates `pod`'s veth pair (both ends up, with their hardware addresses and `pod.mtu`)
    /// before the pod's addresses are known, for an agent that wires while it allocates them;
    /// a later [`setup`](PodDriver::setup) of the pod finds the pair and adds the rest (and
    /// corrects the MTU if the ENI's differs). Only `pod`'s container id, interface name,
    /// namespace and MTU are used (its ENI reference must be well-formed, e.g. an index no
    /// link has, but is not looked up). Idempotent; on failure nothing it created is left. A pair prepared
    /// for a pod that is then not wired is removed by [`teardown`](PodDriver::teardown).
    ///
    /// # Errors
    /// As `setup`.
    pub async fn prepare(&self, node: &Node, pod: &PodNetwork) -> Result<Report> {
        pod.validate_names()?;
        let pod_handle = node.required_pod_handle(pod)?;
        let mut plan = Plan::default();
        Self::pair(&mut plan, pod, pod.mtu);
        apply_links(node, &pod_handle, &plan).await
    }

    /// Unwires `pod` at once and leaves deleting its veth pair to [`Retired::delete`], which
    /// the caller runs when it likes (e.g. after answering the runtime): deleting a veth waits
    /// out an RCU barrier in the kernel, 10–20 ms, while this takes a few requests.
    ///
    /// Removes the pod's policy rules, brings the host end down (the kernel drops the routes
    /// through it) and, inside the pod, brings the pod end down and renames it
    /// ([`retired_name`](crate::naming::retired_name)): the pod has no interface by its name,
    /// no address and no route on a live link, and its namespace is free for the next
    /// `ADD` of that name, whichever plugin makes it. An agent that dies before the deletion
    /// leaves a down pair that goes with the pod's namespace, with the next
    /// [`setup`](PodDriver::setup) of the same pod (its stale host end is replaced), or with
    /// the next run's [`Retired::leftovers`]. Without
    /// the pod's namespace (`pod.netns == None`) the pod end is not renamed. Idempotent.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a bad interface name; [`Error::Teardown`] with every failed
    /// step (it goes on past failures).
    pub async fn retire(&self, node: &Node, pod: &PodNetwork) -> Result<Retired> {
        pod.validate_names()?;
        let eni = Self::eni_or_gone(node, pod).await?;
        let plan = Self::plan(pod, &eni);
        let host_name = host_veth_name(&pod.container_id, &pod.ifname);
        let mut errors = match remove_plan(node, None, &plan.pod_rules_only(), false).await {
            Err(Error::Teardown { errors }) => errors,
            Err(e) => vec![e],
            Ok(()) => Vec::new(),
        };
        let nl = |side| move |e| Error::netlink(side, e);
        let host = match node.handle().link_by_name(&host_name).await {
            Ok(link) => link.filter(|l| l.kind == Some(LinkKind::Veth)),
            Err(e) => {
                errors.push(nl(Side::Node)(e));
                None
            }
        };
        if let Some(host) = &host {
            if let Err(e) = down(node.handle(), host.index, None).await {
                errors.push(nl(Side::Node)(e));
            }
            match node.pod_handle(pod) {
                Ok(Some(pod_handle)) => {
                    if let Err(e) = Self::retire_pod_end(pod_handle.as_ref(), pod, host).await {
                        errors.push(nl(Side::Pod)(e));
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Retired {
                host_interface: host.map(|h| h.name),
            })
        } else {
            Err(Error::Teardown { errors })
        }
    }

    /// Inside the pod: the pair's pod end (when it is still named `pod.ifname` and peered
    /// with `host`) down, then renamed (the kernel renames only links that are down).
    async fn retire_pod_end(
        pod_handle: &dyn NetlinkHandle,
        pod: &PodNetwork,
        host: &Link,
    ) -> std::result::Result<(), NetlinkError> {
        let Some(end) = pod_handle.link_by_name(&pod.ifname).await? else {
            return Ok(());
        };
        if end.kind != Some(LinkKind::Veth) || end.parent != Some(host.index) {
            tracing::warn!(link = %pod.ifname, "not retiring a pod link that is not the host end's peer");
            return Ok(());
        }
        down(pod_handle, end.index, None).await?;
        let tombstone = retired_name(&pod.container_id, &pod.ifname);
        down(pod_handle, end.index, Some(tombstone)).await
    }

    /// The ENI if present, else a stand-in: teardown must work after the ENI is gone.
    async fn eni_or_gone(node: &Node, pod: &PodNetwork) -> Result<EniInfo> {
        Ok(find_eni(node.handle(), Side::Node, &pod.eni)
            .await?
            .map_or_else(EniInfo::gone, EniInfo::from))
    }
}

/// Brings a link down, renaming it when `name` is given.
async fn down(
    handle: &dyn NetlinkHandle,
    index: u32,
    name: Option<String>,
) -> std::result::Result<(), NetlinkError> {
    handle
        .set_link(&LinkChange {
            index,
            up: name.is_none().then_some(false),
            name,
            ..LinkChange::default()
        })
        .await
}

/// A pod's veth pair that [`VethDriver::retire`] unwired and left to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "the pair stays until `delete` runs (or the pod's namespace goes)"]
pub struct Retired {
    host_interface: Option<String>,
}

impl Retired {
    /// The pairs an earlier run retired and did not delete (an agent killed between its
    /// answer and the deletion, with the pod's namespace still there): down veths in the node
    /// namespace named like a pod's host end ([`is_host_veth_name`]), except those in `keep`
    /// (the host ends of the pods the caller knows).
    ///
    /// [`is_host_veth_name`]: crate::naming::is_host_veth_name
    ///
    /// # Errors
    /// When the node's links cannot be listed.
    pub async fn leftovers(node: &Node, keep: &[&str]) -> Result<Vec<Self>> {
        let links = node
            .handle()
            .links()
            .await
            .map_err(|e| Error::netlink(Side::Node, e))?;
        Ok(links
            .into_iter()
            .filter(|l| {
                l.kind == Some(LinkKind::Veth)
                    && !l.up
                    && is_host_veth_name(&l.name)
                    && !keep.contains(&l.name.as_str())
            })
            .map(|l| Self {
                host_interface: Some(l.name),
            })
            .collect())
    }

    /// The pair's host end (`None` when there was no pair left to delete).
    #[must_use]
    pub fn host_interface(&self) -> Option<&str> {
        self.host_interface.as_deref()
    }

    /// Deletes the pair (both ends go together); returns once the kernel has (10–20 ms: an
    /// RCU barrier), so run it on a [`Node`] whose sockets may block
    /// ([`Node::connect_threaded`]). Succeeds when the pair is gone already (the pod's
    /// namespace was deleted, or the host end was replaced by a new `setup`). A link of the
    /// same name that is not a down veth is left alone.
    ///
    /// # Errors
    /// The failed request.
    pub async fn delete(&self, node: &Node) -> Result<()> {
        let Some(name) = &self.host_interface else {
            return Ok(());
        };
        let handle = node.handle();
        let nl = |e| Error::netlink(Side::Node, e);
        let Some(link) = handle.link_by_name(name).await.map_err(nl)? else {
            return Ok(());
        };
        if link.kind != Some(LinkKind::Veth) || link.up {
            return Ok(()); // a new pair by the same name: the pod was wired again
        }
        match handle.del_link(link.index).await {
            Err(e) if !e.is_not_found() => Err(nl(e)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl PodDriver for VethDriver {
    fn mode(&self) -> Mode {
        Mode::Veth
    }

    async fn setup(&self, node: &Node, pod: &PodNetwork) -> Result<Wired> {
        pod.validate()?;
        let eni = require_eni(node, &pod.eni).await?;
        let pod_handle = node.required_pod_handle(pod)?;
        let plan = Self::plan(pod, &eni);
        let host = host_veth_name(&pod.container_id, &pod.ifname);
        apply_plan(
            Mode::Veth,
            node,
            pod,
            &pod_handle,
            &plan,
            Some(host),
            Some(&eni),
        )
        .await
    }

    async fn teardown(&self, node: &Node, pod: &PodNetwork) -> Result<()> {
        pod.validate_names()?;
        let eni = Self::eni_or_gone(node, pod).await?;
        // The veth's deletion takes the pod end and its addresses, routes and neighbours:
        // nothing inside the pod needs a request of its own.
        remove_plan(node, None, &Self::plan(pod, &eni), false).await
    }

    async fn check(&self, node: &Node, pod: &PodNetwork) -> Result<Vec<Drift>> {
        pod.validate()?;
        let eni = require_eni(node, &pod.eni).await?;
        let pod_handle = node.required_pod_handle(pod)?;
        check_plan(node, &pod_handle, &Self::plan(pod, &eni)).await
    }

    async fn ensure_eni(&self, node: &Node, pod: &PodNetwork) -> Result<Report> {
        pod.validate()?;
        let eni = require_eni(node, &pod.eni).await?;
        apply_shared(node, &Self::plan(pod, &eni)).await
    }

    async fn release_eni(&self, node: &Node, pod: &PodNetwork) -> Result<()> {
        pod.validate()?;
        let eni = require_eni(node, &pod.eni).await?;
        remove_plan(node, None, &Self::plan(pod, &eni).shared_only(), true).await
    }
}
