//! IPVLAN (L2) on a shared ENI: the pod's interface is an ipvlan sub-interface of the ENI,
//! created directly in the pod's namespace; a per-ENI ipvlan host interface lets node and pod
//! reach each other.

use async_trait::async_trait;

use super::{
    EniInfo, Mode, Node, PodDriver, Wired, apply_plan, apply_shared, check_plan, default_via,
    find_eni, remove_plan, require_eni,
};
use crate::{
    Error, Result,
    drift::Drift,
    error::Side,
    naming::{ipvlan_host_name, staging_name},
    netlink::{Family, Scope, TABLE_MAIN, host_route},
    plan::{LinkSpec, Object, Origin, Plan, Report},
    spec::{PodNetwork, SpecError},
};

/// IPVLAN L2 sub-interfaces of a shared ENI.
///
/// In the pod: `<ifname>` (ipvlan L2 child of the ENI, sharing its MAC) with the pod IP and the
/// vSwitch prefix length, `default via <vSwitch gateway> onlink`, and for each node IP a
/// `/32` link route plus a permanent neighbour pointing at the ENI's own MAC; Service and
/// host-stack CIDRs go `via <node IP> onlink`. Frames addressed to the shared MAC whose
/// destination is not another sub-interface are handed to the ENI's receive path by the kernel,
/// so those packets enter the node's stack (kube-proxy, eBPF, node-local DNS). On the node:
/// `cnki<ENI ifindex>` (ipvlan L2, NOARP, shared by the ENI's pods) holding the node IPs as
/// host-scope `/32`, and a `/32` route per pod through it.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpVlanDriver;

impl IpVlanDriver {
    fn validate(pod: &PodNetwork, eni: &EniInfo) -> Result<(), SpecError> {
        pod.validate()?;
        for family in Family::BOTH {
            let needs_node_ip = pod
                .node_destinations()
                .any(|c| Family::of(c.ip()) == family);
            if needs_node_ip && pod.node_ip(family).is_none() {
                return Err(SpecError::MissingNodeIp { family });
            }
        }
        if let Some(mtu) = pod.mtu
            && mtu > eni.mtu
        {
            return Err(SpecError::MtuAboveEni {
                mtu,
                eni_mtu: eni.mtu,
            });
        }
        if eni.mac.is_none() {
            return Err(SpecError::EniWithoutMac);
        }
        Ok(())
    }

    pub(crate) fn plan(pod: &PodNetwork, eni: &EniInfo) -> Plan {
        let host = ipvlan_host_name(eni.index);
        let mut plan = Plan::default();

        plan.shared(Object::Link(LinkSpec {
            name: eni.name.clone(),
            origin: Origin::Existing,
            mtu: None,
            up: true,
            arp: None,
            mac: None,
        }));
        plan.shared(Object::Link(LinkSpec {
            name: host.clone(),
            origin: Origin::IpVlan {
                parent: eni.name.clone(),
                staging: None,
            },
            mtu: None,
            up: true,
            arp: Some(false),
            mac: None,
        }));
        for node_ip in &pod.node_ips {
            plan.shared(Object::Address {
                link: host.clone(),
                address: host_route(*node_ip),
                scope: Scope::Host,
            });
        }

        plan.pod(Object::Link(LinkSpec {
            name: pod.ifname.clone(),
            origin: Origin::IpVlan {
                parent: eni.name.clone(),
                staging: Some(staging_name(&pod.container_id, &pod.ifname)),
            },
            mtu: Some(pod.mtu.unwrap_or(eni.mtu)),
            up: true,
            arp: None,
            mac: None,
        }));
        for config in pod.ip_configs() {
            plan.pod(Object::Address {
                link: pod.ifname.clone(),
                address: config.address,
                scope: Scope::Universe,
            });
            if let Some(gateway) = config.gateway {
                for object in default_via(&pod.ifname, gateway, TABLE_MAIN) {
                    plan.pod(object);
                }
            }
        }
        if let Some(mac) = eni.mac {
            for node_ip in &pod.node_ips {
                plan.pod(Object::Route {
                    link: pod.ifname.clone(),
                    destination: host_route(*node_ip),
                    gateway: None,
                    table: TABLE_MAIN,
                });
                plan.pod(Object::Neighbour {
                    link: pod.ifname.clone(),
                    ip: *node_ip,
                    mac,
                });
            }
        }
        for cidr in pod.node_destinations() {
            if let Some(node_ip) = pod.node_ip(Family::of(cidr.ip())) {
                plan.pod(Object::Route {
                    link: pod.ifname.clone(),
                    destination: cidr,
                    gateway: Some(node_ip),
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
        }
        plan
    }
}

#[async_trait]
impl PodDriver for IpVlanDriver {
    fn mode(&self) -> Mode {
        Mode::IpVlan
    }

    async fn setup(&self, node: &Node, pod: &PodNetwork) -> Result<Wired> {
        pod.validate()?;
        let eni = require_eni(node, &pod.eni).await?;
        Self::validate(pod, &eni)?;
        let pod_handle = node.required_pod_handle(pod)?;
        let plan = Self::plan(pod, &eni);
        apply_plan(
            Mode::IpVlan,
            node,
            pod,
            &pod_handle,
            &plan,
            None,
            Some(&eni),
        )
        .await
    }

    async fn teardown(&self, node: &Node, pod: &PodNetwork) -> Result<()> {
        pod.validate_names()?;
        let eni = find_eni(node.handle(), Side::Node, &pod.eni)
            .await?
            .map_or_else(EniInfo::gone, EniInfo::from);
        let pod_handle = node.pod_handle(pod)?;
        remove_plan(node, pod_handle.as_ref(), &Self::plan(pod, &eni), false).await
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
        Self::validate(pod, &eni).map_err(Error::from)?;
        apply_shared(node, &Self::plan(pod, &eni)).await
    }

    async fn release_eni(&self, node: &Node, pod: &PodNetwork) -> Result<()> {
        pod.validate_names()?;
        let eni = require_eni(node, &pod.eni).await?;
        remove_plan(node, None, &Self::plan(pod, &eni).shared_only(), true).await
    }
}
