//! Exclusive ENI: the whole ENI moves into the pod; a veth pair gives the pod a path to the
//! node for Service and node-local traffic. On teardown the ENI goes back intact.

use async_trait::async_trait;

use super::{
    Mode, Node, PodDriver, Wired, apply_plan, check_plan, default_via, link_local_gateway,
    remove_plan, require_eni,
};
use crate::{
    Error, Result,
    drift::Drift,
    error::Side,
    naming::{
        ENI_ALIAS_PREFIX, EXCLUSIVE_NODE_LINK, HOST_VETH_MAC, host_veth_name, pod_key, pod_veth_mac,
    },
    netlink::{Family, Handle, Link, LinkChange, NetlinkHandle, Scope, TABLE_MAIN, host_route},
    plan::{LinkSpec, Object, Origin, Plan, Report},
    spec::{PodNetwork, SpecError, validate_ifname},
};

/// The ENI moved into the pod, plus (by default) a veth path to the node.
///
/// In the pod: the ENI renamed `<ifname>`, with the pod IP as `/32` (`/128`) and
/// `default via <vSwitch gateway> onlink`. With the node path: `veth1` (also carrying the pod IP),
/// a permanent neighbour for `169.254.1.1` (`fe80::1`), and routes to the Service and host-stack
/// CIDRs and the node IPs via that gateway; on the node `cnk<hash>` and a `/32` route to the pod.
///
/// While in the pod the ENI carries the alias `cnikit:eni:<key>:<mtu>:<up|down>:<name>`, which
/// records how to give it back: teardown returns it to the node namespace with its original name,
/// MTU and state, also when the kernel already moved it back because the pod's namespace died.
#[derive(Clone, Debug)]
pub struct ExclusiveEniDriver {
    /// Create the veth path to the node (default `true`).
    pub node_path: bool,
    /// Name of the node-path veth inside the pod (default `veth1`).
    pub node_link: String,
}

impl Default for ExclusiveEniDriver {
    fn default() -> Self {
        Self {
            node_path: true,
            node_link: EXCLUSIVE_NODE_LINK.to_owned(),
        }
    }
}

/// What the alias of an adopted ENI records.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Adoption {
    mtu: u32,
    up: bool,
    name: String,
}

impl Adoption {
    fn alias(&self, key: &str) -> String {
        let state = if self.up { "up" } else { "down" };
        format!("{ENI_ALIAS_PREFIX}{key}:{}:{state}:{}", self.mtu, self.name)
    }

    fn parse(alias: &str, key: &str) -> Option<Self> {
        let rest = alias
            .strip_prefix(ENI_ALIAS_PREFIX)?
            .strip_prefix(key)?
            .strip_prefix(':')?;
        let mut parts = rest.splitn(3, ':');
        let mtu = parts.next()?.parse().ok()?;
        let up = match parts.next()? {
            "up" => true,
            "down" => false,
            _ => return None,
        };
        let name = parts.next()?.to_owned();
        validate_ifname(&name).ok()?;
        Some(Self { mtu, up, name })
    }
}

/// The link in `handle`'s namespace adopted by the pod with `key`, and its record.
async fn find_adopted(
    handle: &dyn NetlinkHandle,
    side: Side,
    key: &str,
) -> Result<Option<(Link, Adoption)>> {
    let links = handle.links().await.map_err(|e| Error::netlink(side, e))?;
    Ok(links.into_iter().find_map(|link| {
        let adoption = Adoption::parse(link.alias.as_deref()?, key)?;
        Some((link, adoption))
    }))
}

impl ExclusiveEniDriver {
    fn validate(&self, pod: &PodNetwork) -> Result<(), SpecError> {
        pod.validate()?;
        if self.node_path {
            validate_ifname(&self.node_link)?;
            if self.node_link == pod.ifname {
                return Err(SpecError::InterfaceName {
                    name: self.node_link.clone(),
                    reason: "the node-path link needs a name of its own",
                });
            }
        }
        Ok(())
    }

    fn plan(&self, pod: &PodNetwork, mtu: Option<u32>) -> Plan {
        let mut plan = Plan::default();
        plan.pod(Object::Link(LinkSpec {
            name: pod.ifname.clone(),
            origin: Origin::Existing,
            mtu,
            up: true,
            arp: None,
            mac: None,
        }));
        for config in pod.ip_configs() {
            plan.pod(Object::Address {
                link: pod.ifname.clone(),
                address: host_route(config.ip()),
                scope: Scope::Universe,
            });
            if let Some(gateway) = config.gateway {
                for object in default_via(&pod.ifname, gateway, TABLE_MAIN) {
                    plan.pod(object);
                }
            }
        }
        if !self.node_path {
            return plan;
        }
        let host = host_veth_name(&pod.container_id, &pod.ifname);
        let link = &self.node_link;
        plan.node(Object::Link(LinkSpec {
            name: host.clone(),
            origin: Origin::Veth { peer: link.clone() },
            mtu,
            up: true,
            arp: None,
            mac: Some(HOST_VETH_MAC),
        }));
        let pod_mac = pod_veth_mac(&pod.container_id, &pod.ifname);
        plan.pod(Object::Link(LinkSpec {
            name: link.clone(),
            origin: Origin::VethPeer,
            mtu,
            up: true,
            arp: None,
            mac: Some(pod_mac),
        }));
        for config in pod.ip_configs() {
            let family = config.family();
            let gateway = link_local_gateway(family);
            plan.pod(Object::Address {
                link: link.clone(),
                address: host_route(config.ip()),
                scope: Scope::Universe,
            });
            plan.pod(Object::Neighbour {
                link: link.clone(),
                ip: gateway,
                mac: HOST_VETH_MAC,
            });
            let node_ips = pod
                .node_ips
                .iter()
                .filter(|ip| Family::of(**ip) == family)
                .map(|ip| host_route(*ip));
            let destinations = pod
                .node_destinations()
                .filter(|c| Family::of(c.ip()) == family)
                .chain(node_ips);
            for destination in destinations {
                plan.pod(Object::Route {
                    link: link.clone(),
                    destination,
                    gateway: Some(gateway),
                    table: TABLE_MAIN,
                });
            }
        }
        for config in pod.ip_configs() {
            plan.node(Object::Route {
                link: host.clone(),
                destination: host_route(config.ip()),
                gateway: None,
                table: TABLE_MAIN,
            });
            plan.node(Object::Neighbour {
                link: host.clone(),
                ip: config.ip(),
                mac: pod_mac,
            });
        }
        plan
    }

    /// Moves the ENI into the pod as `<ifname>` with the pod's MTU, up, recording how to give
    /// it back. Returns the MTU the pod interface gets.
    async fn adopt(&self, node: &Node, pod: &PodNetwork, pod_handle: &Handle) -> Result<u32> {
        let eni = require_eni(node, &pod.eni).await?;
        let key = pod_key(&pod.container_id, &pod.ifname);
        if pod_handle
            .link_by_name(&pod.ifname)
            .await
            .map_err(|e| Error::netlink(Side::Pod, e))?
            .is_some()
        {
            return Err(Error::LinkConflict {
                side: Side::Pod,
                name: pod.ifname.clone(),
                reason: "the pod already has an interface of that name".to_owned(),
            });
        }
        let record = Adoption {
            mtu: eni.mtu,
            up: eni.up,
            name: eni.name.clone(),
        };
        let mtu = pod.mtu.unwrap_or(eni.mtu);
        let moved = node
            .handle()
            .set_link(&LinkChange {
                index: eni.index,
                netns: pod.netns.clone(),
                name: Some(pod.ifname.clone()),
                alias: Some(record.alias(&key)),
                mtu: Some(mtu),
                up: Some(true),
                ..LinkChange::default()
            })
            .await;
        if let Err(e) = moved {
            // The move may have happened before a later part of the request failed.
            if let Some(mac) = eni.mac {
                let stray = pod_handle
                    .links()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .find(|l| l.mac == Some(mac));
                if let Some(stray) = stray {
                    let _returned = give_back(node, pod_handle.as_ref(), &stray, &record).await;
                }
            }
            return Err(Error::netlink(Side::Node, e));
        }
        Ok(mtu)
    }

    /// Returns the adopted ENI to the node namespace; `Ok(false)` when it was nowhere.
    async fn return_eni(
        &self,
        node: &Node,
        pod: &PodNetwork,
        pod_handle: Option<&Handle>,
    ) -> Result<bool> {
        let key = pod_key(&pod.container_id, &pod.ifname);
        if let Some(pod_handle) = pod_handle
            && let Some((link, record)) = find_adopted(pod_handle.as_ref(), Side::Pod, &key).await?
        {
            give_back(node, pod_handle.as_ref(), &link, &record).await?;
            return Ok(true);
        }
        // The kernel moves physical devices back when a namespace dies (maybe renamed).
        if let Some((link, record)) = find_adopted(node.handle(), Side::Node, &key).await? {
            let nl = |e| Error::netlink(Side::Node, e);
            if link.name != record.name {
                node.handle()
                    .set_link(&LinkChange {
                        index: link.index,
                        up: Some(false),
                        ..LinkChange::default()
                    })
                    .await
                    .map_err(nl)?;
            }
            node.handle()
                .set_link(&LinkChange {
                    index: link.index,
                    name: (link.name != record.name).then(|| record.name.clone()),
                    mtu: Some(record.mtu),
                    alias: Some(String::new()),
                    up: Some(record.up),
                    ..LinkChange::default()
                })
                .await
                .map_err(nl)?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// One request: into the node namespace, original name, MTU and state, alias cleared.
async fn give_back(
    node: &Node,
    pod_handle: &dyn NetlinkHandle,
    link: &Link,
    record: &Adoption,
) -> Result<()> {
    pod_handle
        .set_link(&LinkChange {
            index: link.index,
            netns: Some(node.netns().clone()),
            name: Some(record.name.clone()),
            mtu: Some(record.mtu),
            alias: Some(String::new()),
            up: Some(record.up),
            ..LinkChange::default()
        })
        .await
        .map_err(|e| Error::netlink(Side::Pod, e))
}

#[async_trait]
impl PodDriver for ExclusiveEniDriver {
    fn mode(&self) -> Mode {
        Mode::ExclusiveEni
    }

    async fn setup(&self, node: &Node, pod: &PodNetwork) -> Result<Wired> {
        self.validate(pod)?;
        let pod_handle = node.required_pod_handle(pod)?;
        let key = pod_key(&pod.container_id, &pod.ifname);
        let adopted = find_adopted(pod_handle.as_ref(), Side::Pod, &key).await?;
        let (mtu, moved) = match &adopted {
            Some((link, record)) if link.name == pod.ifname => {
                (pod.mtu.unwrap_or(record.mtu), false)
            }
            Some((link, _)) => {
                return Err(Error::LinkConflict {
                    side: Side::Pod,
                    name: link.name.clone(),
                    reason: format!("this pod's ENI is there but not named {}", pod.ifname),
                });
            }
            None => (self.adopt(node, pod, &pod_handle).await?, true),
        };
        let plan = self.plan(pod, Some(mtu));
        let host = self
            .node_path
            .then(|| host_veth_name(&pod.container_id, &pod.ifname));
        match apply_plan(
            Mode::ExclusiveEni,
            node,
            pod,
            &pod_handle,
            &plan,
            host,
            None,
        )
        .await
        {
            Ok(mut wired) => {
                if moved {
                    wired.report.created += 1;
                }
                Ok(wired)
            }
            Err(e) if moved => match self.return_eni(node, pod, Some(&pod_handle)).await {
                Ok(_) => Err(e),
                Err(undo) => Err(match e {
                    Error::RollbackFailed { source, mut errors } => {
                        errors.push(undo);
                        Error::RollbackFailed { source, errors }
                    }
                    e => Error::RollbackFailed {
                        source: Box::new(e),
                        errors: vec![undo],
                    },
                }),
            },
            Err(e) => Err(e),
        }
    }

    async fn teardown(&self, node: &Node, pod: &PodNetwork) -> Result<()> {
        pod.validate_names()?;
        let pod_handle = node.pod_handle(pod)?;
        let mut errors = Vec::new();
        if let Err(e) = self.return_eni(node, pod, pod_handle.as_ref()).await {
            errors.push(e);
        }
        if let Err(Error::Teardown { errors: more }) =
            remove_plan(node, pod_handle.as_ref(), &self.plan(pod, None), false).await
        {
            errors.extend(more);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown { errors })
        }
    }

    async fn check(&self, node: &Node, pod: &PodNetwork) -> Result<Vec<Drift>> {
        self.validate(pod)?;
        let pod_handle = node.required_pod_handle(pod)?;
        let key = pod_key(&pod.container_id, &pod.ifname);
        // Without an explicit MTU the pod gets the ENI's own (recorded when it was adopted).
        let mtu = match find_adopted(pod_handle.as_ref(), Side::Pod, &key).await? {
            Some((_, record)) => Some(pod.mtu.unwrap_or(record.mtu)),
            None => pod.mtu,
        };
        check_plan(node, &pod_handle, &self.plan(pod, mtu)).await
    }

    async fn ensure_eni(&self, _node: &Node, pod: &PodNetwork) -> Result<Report> {
        self.validate(pod)?;
        Ok(Report::default())
    }

    async fn release_eni(&self, _node: &Node, pod: &PodNetwork) -> Result<()> {
        pod.validate_names()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_round_trip() {
        let record = Adoption {
            mtu: 9000,
            up: true,
            name: "eth1".into(),
        };
        let alias = record.alias("0123456789a");
        assert_eq!(alias, "cnikit:eni:0123456789a:9000:up:eth1");
        assert_eq!(Adoption::parse(&alias, "0123456789a"), Some(record));
        assert_eq!(Adoption::parse(&alias, "0123456789b"), None);
        assert_eq!(
            Adoption::parse("cnikit:eni:0123456789a:x:up:eth1", "0123456789a"),
            None
        );
        assert_eq!(
            Adoption::parse("cnikit:eni:0123456789a:1500:sideways:eth1", "0123456789a"),
            None
        );
        assert_eq!(
            Adoption::parse("cnikit:eni:0123456789a:1500:down:a/b", "0123456789a"),
            None
        );
    }
}
